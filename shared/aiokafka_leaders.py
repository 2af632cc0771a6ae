"""A fix to aiokafka's consumer: a partition whose offset must be reset follows its new leader.

When a consumer is given a partition without a committed offset (a topic nobody has written
yet, say), aiokafka (0.14) asks the partition's leader for the offset to start from. If the
leader it knows has moved (a broker was killed and leadership went to another), the answer is
`NotLeaderForPartitionError`; aiokafka logs it and asks the same broker again every
`retry_backoff_ms`, without refreshing its metadata. Meanwhile it fetches nothing from that
broker for ANY partition (`Fetcher._get_actions_per_node` holds back a node with a reset in
progress), until the metadata's age runs out: five minutes by default. In the faults run on
Apache Kafka that left a scorer's share of new leads unread for minutes after a broker restart.

The fix, the only place leadrelay touches this internal: when the offset request says the
leadership is stale, ask for fresh metadata before the next try, as aiokafka does for a
fetch that gets the same error. `install()` applies it once; `tests/test_library_internals.py`
fails when the method it wraps moves.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NotLeaderForPartitionError, UnknownTopicOrPartitionError

STALE_LEADERSHIP = (NotLeaderForPartitionError, UnknownTopicOrPartitionError)

OffsetRequest = Callable[[Any, int, Any], Awaitable[Any]]


def _refreshing_metadata_on_stale_leadership(request: OffsetRequest) -> OffsetRequest:
    @functools.wraps(request)
    async def offset_request(fetcher: Any, node_id: int, topic_data: Any) -> Any:
        try:
            return await request(fetcher, node_id, topic_data)
        except STALE_LEADERSHIP:
            fetcher._client.force_metadata_update()
            raise

    offset_request.refreshes_metadata = True  # type: ignore[attr-defined]
    return offset_request


def install() -> None:
    """Wrap `Fetcher._proc_offset_request` (once per process)."""
    current = Fetcher._proc_offset_request
    if getattr(current, "refreshes_metadata", False):
        return
    Fetcher._proc_offset_request = _refreshing_metadata_on_stale_leadership(current)
