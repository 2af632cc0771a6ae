"""Each lead's outbox row keeps its own request's trace and correlation id, even when the
requests of a group commit are written in one transaction at its end."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from services.ingest.models import OUTBOX
from services.ingest.schemas import LeadAccepted
from shared.logs import LogContext, use_context
from tests.ingest.test_group_commit import (  # noqa: F401 - fixtures
    Instance,
    instances,
    migrated_url,
    rows,
)


async def test_rows_of_one_group_keep_each_requests_context(
    instances: Callable[[], Instance],  # noqa: F811 - the fixture imported above
) -> None:
    writer = instances()
    await asyncio.sleep(0)  # the writer task is waiting for work
    contexts = [LogContext(f"corr-{number}", None,
                           f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
                for number in range(3)]

    async def submit_as(context: LogContext, email: str) -> LeadAccepted:
        use_context(context)  # as the request's middleware does, in the request's own task
        return await writer.submit({"email": email, "name": "Traced"})

    answers = await asyncio.gather(*(
        asyncio.create_task(submit_as(context, f"lead{number}@acme.io"))
        for number, context in enumerate(contexts)))

    assert writer.writes.largest_group == len(contexts)
    written = {row["message_key"]: (row["traceparent"], row["correlation_id"])
               for row in await rows(writer.db, OUTBOX.events)}
    assert written == {answer.lead_id: (context.traceparent, context.correlation_id)
                       for answer, context in zip(answers, contexts, strict=True)}
