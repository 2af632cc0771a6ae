"""The shared parts of an erasure: statement values kept out of errors (and so out of logs),
processed-event records purged after their retention, a lead's delivery records erased."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from shared.clock import ManualClock
from shared.db import Database
from shared.erasure import erase_delivery_records
from shared.inbox import EPOCH_ADOPTER
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from tests.shared.conftest import INBOX, OUTBOX

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
CANARY = "canary.parameter@acme.example"


async def test_a_failed_statement_does_not_show_its_values(database: Database) -> None:
    row = {"consumer": "sample", "event_id": CANARY, "event_type": "lead.received",
           "processed_at": NOW}
    with pytest.raises(IntegrityError) as failed:
        async with database.transaction() as session:
            await session.execute(insert(INBOX.processed).values(row))
            await session.execute(insert(INBOX.processed).values(row))
    assert CANARY not in str(failed.value)
    assert "hidden" in str(failed.value)


async def test_processed_event_records_but_adopted_broker_epochs_are_purged_after_their_retention(
    database: Database, database_url: str
) -> None:
    clock = ManualClock(NOW)
    runtime = ServiceRuntime(
        ServiceSettings(database_url=database_url, processed_event_retention_hours=24),
        outbox_tables=OUTBOX, inbox_tables=INBOX, publish_topic="sample", clock=clock,
        database=database)
    async with database.transaction() as session:
        await session.execute(insert(INBOX.processed), [
            {"consumer": consumer, "event_id": event_id, "event_type": "lead.received",
             "processed_at": NOW - age}
            for consumer, event_id, age in [("sample", "old", timedelta(hours=25)),
                                            ("sample", "new", timedelta(hours=23)),
                                            (EPOCH_ADOPTER, "epoch", timedelta(days=30))]
        ])
    assert await runtime.purge_processed_events() == 1
    async with database.reading() as session:
        left = set(await session.scalars(select(INBOX.processed.c.event_id)))
    assert left == {"new", "epoch"}


async def test_a_leads_published_events_and_dead_letters_are_erased(database: Database) -> None:
    def outbox_row(number: int, lead_id: str, published: bool) -> dict[str, object]:
        return {"event_id": f"event-{number}", "event_type": "lead.scored", "topic": "t",
                "message_key": lead_id, "shard": 0, "payload": "{}", "created_at": NOW,
                "published_at": NOW if published else None}

    async with database.transaction() as session:
        await session.execute(insert(OUTBOX.events), [
            outbox_row(1, "gone", True), outbox_row(2, "gone", False), outbox_row(3, "kept", True)])
        await session.execute(insert(INBOX.failed), [
            {"consumer": "sample", "topic": "t", "partition": 0, "offset": offset,
             "message_key": lead_id, "payload": CANARY, "error": "e", "failed_at": NOW}
            for offset, lead_id in enumerate(["gone", "kept"])])
    async with database.transaction() as session:
        await erase_delivery_records(session, "gone", outbox=OUTBOX, inbox=INBOX)
    async with database.reading() as session:
        events = list(await session.scalars(select(OUTBOX.events.c.event_id)
                                            .order_by(OUTBOX.events.c.id)))
        failed = list(await session.scalars(select(INBOX.failed.c.message_key)))
        count = await session.scalar(select(func.count()).select_from(INBOX.failed))
    # The unpublished row still goes out (sealed under a key the erasure deletes).
    assert events == ["event-2", "event-3"]
    assert failed == ["kept"] and count == 1
