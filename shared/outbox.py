"""Transactional outbox: events are written with the state change and relayed to Kafka after commit.

A service calls `Outbox.add(session, event)` inside the transaction that changes its state;
the row commits or rolls back with it, and its commit wakes the relay (a rollback does not).
The relay (`shared.outbox_relay`) then publishes committed rows, in order per lead, and marks
them published only once the broker acknowledged them. On SQLite the commit also hands the
relay the rows it wrote (`hand_over`), so the relay need not read back what its own process
just wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.after_commit import defer_until_commit
from shared.clock import Clock, SystemClock
from shared.events import Envelope, encode_event
from shared.outbox_tables import AutoIncrement, OutboxTables, outbox_tables, shard_of
from shared.tracing import context_for

__all__ = ["AutoIncrement", "Outbox", "OutboxRow", "OutboxTables", "outbox_tables", "shard_of"]


@dataclass(frozen=True)
class OutboxRow:
    """A committed outbox row, as the relay publishes it."""

    id: int
    event_id: str
    event_type: str
    topic: str
    message_key: str
    payload: str
    traceparent: str | None = None
    correlation_id: str | None = None


_NONE_HANDED: tuple[OutboxRow, ...] = ()


Encoder = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[list[str]]]
"""Turns events into their outbox payloads (a service that seals personal data passes its own:
`shared.sealing`); the default is each event's JSON."""


class Outbox:
    """Writes events into a service's outbox, inside the caller's transaction."""

    def __init__(
        self, tables: OutboxTables, *, topic: str, shards: int, clock: Clock | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.tables = tables
        self.encoder = encoder
        self.topic = topic
        self.shards = shards
        self.clock = clock or SystemClock()
        self._wake = asyncio.Event()
        self._insert = insert(tables.events)
        self._insert_returning_ids = insert(tables.events).returning(
            tables.events.c.event_id, tables.events.c.id)
        self.hand_over = False
        """Set by a relay that takes committed rows from `committed` instead of reading them."""
        self.committed: list[OutboxRow] = []
        """Rows committed since the relay last took them (only while `hand_over`)."""

    async def add(
        self, session: AsyncSession, *events: Envelope, topic: str | None = None
    ) -> None:
        """Write `events` in `session`'s transaction; the relay is woken once it commits.
        They go to `topic` when given, else to the outbox's own topic."""
        if not events:
            return
        topic = topic or self.topic
        now = self.clock.now()
        payloads = (await self.encoder(session, events) if self.encoder is not None
                    else [encode_event(event).decode() for event in events])
        fields = [
            (str(event.event_id), getattr(event, "type", type(event).__name__), event.lead_id,
             payload, *_trace_of(event))
            for event, payload in zip(events, payloads, strict=True)
        ]
        rows = [
            {"event_id": event_id, "event_type": event_type, "topic": topic,
             "message_key": key, "shard": shard_of(key, self.shards), "payload": payload,
             "traceparent": traceparent, "correlation_id": correlation_id, "created_at": now}
            for event_id, event_type, key, payload, traceparent, correlation_id in fields
        ]
        if not self.hand_over:
            await session.execute(self._insert, rows)
            defer_until_commit(session, (self, "wake"), _NONE_HANDED, self._committed)
            return
        # Matched by event id: SQLite returns several rows' ids in no promised order.
        inserted = await session.execute(self._insert_returning_ids, rows)
        ids: dict[str, int] = {event_id: row_id for event_id, row_id in inserted}
        written = tuple(
            OutboxRow(ids[event_id], event_id, event_type, topic, key, payload,
                      traceparent, correlation_id)
            for event_id, event_type, key, payload, traceparent, correlation_id in fields
        )
        defer_until_commit(session, (self, "wake"), written, self._committed)

    def _committed(self, adds: list[tuple[OutboxRow, ...]]) -> None:
        if self.hand_over:
            for written in adds:
                self.committed.extend(written)
        self._wake.set()

    def wake(self) -> None:
        """Make the relay look at once (the broker changed, say)."""
        self._wake.set()

    def take_committed(self) -> list[OutboxRow]:
        taken, self.committed = self.committed, []
        return taken

    async def wait_for_work(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 a cancel racing the wake-up can be
        # lost in wait_for, and the relay task then never finishes cancelling.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()


def _trace_of(event: Envelope) -> tuple[str | None, str | None]:
    """The traceparent and correlation id an event's row keeps (`shared.tracing`)."""
    context = context_for(event.lead_id)
    if context is None:
        return None, event.correlation_id
    return context.traceparent, event.correlation_id or context.correlation_id
