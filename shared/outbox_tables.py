"""A service's outbox tables: `<prefix>_outbox_event` (the events, pending until published) and
`<prefix>_outbox_shard` (one lock row per shard, which relays claim on PostgreSQL)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

from shared.db import UTCDateTime

AutoIncrement = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class OutboxTables:
    events: Table
    shards: Table


def outbox_tables(metadata: MetaData, prefix: str, *, lanes: bool = False) -> OutboxTables:
    """Declare a service's outbox tables: `<prefix>_outbox_event` and `<prefix>_outbox_shard`.
    `lanes`: an index of the pending rows by topic, for a relay with fast topics."""
    events = Table(
        f"{prefix}_outbox_event",
        metadata,
        Column("id", AutoIncrement, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(64), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("message_key", String(64), nullable=False),
        Column("shard", Integer, nullable=False),
        Column("payload", Text, nullable=False),
        # The request's or consumed event's trace and correlation id, sent as record headers.
        Column("traceparent", String(55), nullable=True),
        Column("correlation_id", String(128), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("published_at", UTCDateTime, nullable=True),
    )
    Index(
        f"ix_{prefix}_outbox_event_pending",
        events.c.shard,
        events.c.id,
        postgresql_where=events.c.published_at.is_(None),
        sqlite_where=events.c.published_at.is_(None),
    )
    if lanes:
        Index(
            f"ix_{prefix}_outbox_event_pending_topic",
            events.c.topic,
            events.c.id,
            postgresql_where=events.c.published_at.is_(None),
            sqlite_where=events.c.published_at.is_(None),
        )
    shards = Table(
        f"{prefix}_outbox_shard",
        metadata,
        Column("shard", Integer, primary_key=True, autoincrement=False),
    )
    return OutboxTables(events=events, shards=shards)


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards
