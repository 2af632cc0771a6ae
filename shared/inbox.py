"""Idempotent consumption: the processed-event record and the dead-letter record of a service.

Each applied event leaves a `(consumer, event_id)` row in `<prefix>_processed_event`, written
in the same transaction as the event's effect. A redelivered event finds its row and has no
second effect. An event that cannot be applied (it breaks its contract, or its handler fails)
is kept whole in `<prefix>_failed_event` with the error, so nothing accepted is ever lost
(until its lead is erased: `shared.erasure`).
Processed-event rows are purged after a retention (`purge_processed`): long after any
redelivery, and they link event ids to the leads' activity for no other purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import UTCDateTime
from shared.outbox import AutoIncrement


@dataclass(frozen=True)
class InboxTables:
    processed: Table
    failed: Table


EPOCH_ADOPTER = "broker-epoch"
"""The `consumer` of the processed-event rows that record an adopted broker epoch
(`shared.broker_recovery`): kept by the purge, or a restarted service would adopt its broker's
epoch again and publish its recent events once more."""


def inbox_tables(metadata: MetaData, prefix: str) -> InboxTables:
    processed = Table(
        f"{prefix}_processed_event",
        metadata,
        Column("consumer", String(64), nullable=False),
        Column("event_id", String(36), nullable=False),
        Column("event_type", String(64), nullable=False),
        Column("processed_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("consumer", "event_id"),
    )
    failed = Table(
        f"{prefix}_failed_event",
        metadata,
        Column("id", AutoIncrement, primary_key=True, autoincrement=True),
        Column("consumer", String(64), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", AutoIncrement, nullable=False),
        Column("message_key", String(64), nullable=True),
        Column("payload", Text, nullable=False),
        Column("error", Text, nullable=False),
        Column("failed_at", UTCDateTime, nullable=False),
    )
    return InboxTables(processed=processed, failed=failed)


async def purge_processed(session: AsyncSession, inbox: InboxTables, before: datetime) -> int:
    """Delete the processed-event records older than `before`, but the adopted broker epochs;
    how many were deleted."""
    result = await session.execute(delete(inbox.processed).where(
        inbox.processed.c.processed_at < before, inbox.processed.c.consumer != EPOCH_ADOPTER))
    return int(cast(CursorResult[Any], result).rowcount)
