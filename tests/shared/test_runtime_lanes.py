"""A service in several processes: a lane's consumer group of its own, and a process that
relays nothing (the scorer's `signals` process)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker
from shared.db import Database
from shared.events import encode_event
from shared.kafka import build_producer
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from tests.shared.conftest import INBOX, OUTBOX, erased
from tests.support import eventually, read_topic

pytestmark = pytest.mark.broker


class SampleSettings(ServiceSettings):
    service_name: ClassVar[str] = "sample"


async def test_a_process_that_relays_nothing_keeps_nothing_for_a_relay_and_its_lane_consumes(
    database: Database, database_url: str, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = SampleSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                              kafka_topic_prefix=topic_prefix, database_url=database_url)
    topics = settings.topics
    seen: list[str] = []

    async def forward(session: AsyncSession, event: Any) -> None:
        seen.append(event.lead_id)
        await signals_lane.outbox.add(session, erased(f"{event.lead_id}-forwarded"))

    signals_lane = ServiceRuntime(settings, outbox_tables=OUTBOX, inbox_tables=INBOX,
                                  publish_topic=topics.scores, database=database, relay=False)
    signals_lane.subscribe([topics.signals], {"lead.erased": forward}, lane="signals",
                           idle_fetch_wait_ms=1500)
    leads_lane = ServiceRuntime(settings, outbox_tables=OUTBOX, inbox_tables=INBOX,
                                publish_topic=topics.scores, database=Database(database_url),
                                outbox_written_elsewhere=True)
    async with signals_lane, leads_lane:
        assert signals_lane.relay is None
        producer = build_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(topics.signals, encode_event(erased("lead-1")),
                                         key=b"lead-1")
        finally:
            await producer.stop()
        await eventually(lambda: _value(seen), until=lambda got: got == ["lead-1"], timeout=30)
        lane = signals_lane.consumers["signals"].consumer
        assert lane._group_id == f"{topic_prefix}-sample-signals"
        assert signals_lane.consumers["signals"].idle.idle_wait_ms == 1500
        received = await read_topic(broker.bootstrap_servers, topics.scores, 1, timeout=10)
        ready = await eventually(signals_lane.readiness, until=lambda got: all(got.values()),
                                 timeout=30)
    assert [item["lead_id"] for item in received] == ["lead-1-forwarded"]
    assert signals_lane.outbox.committed == []  # nothing held in memory for a relay
    assert ready == {"database": True, "loops": True, "consumer": True}
    assert signals_lane.epochs is not None and signals_lane.epochs.current is not None


async def _value(items: list[str]) -> list[str]:
    return list(items)
