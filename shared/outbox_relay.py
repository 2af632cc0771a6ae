"""The outbox relay: publishes committed outbox rows to Kafka and marks them published once the
broker acknowledged them (`shared.outbox` writes them).

A crash between the acknowledgement and the mark republishes the event: consumers are
idempotent by event id.

Several relays (one per service instance) may run at once. Each lead is hashed to a shard;
on PostgreSQL a relay claims whole shards with `FOR UPDATE SKIP LOCKED` and holds them while it
publishes, so two relays never publish events of the same lead and per-lead order holds.
SQLite has a single writer per file: there the relay reads outside any write lock, publishes,
then marks in a short transaction a moment later (`mark_after`), so that the marks of many
small batches share one transaction instead of each taking the write lock from the services'
own writes. It does not even read what its own process just wrote: the commit hands it the
rows, and it publishes them as they are when their ids follow on from the last id it published
(SQLite numbers rows one past the highest, and its writes take turns, so a row written by
anything else shows as a gap, and the relay then reads the table as before).

With a `BrokerGuard` (`shared.broker_recovery`), an acknowledgement is trusted only from the
broker epoch known before the send and confirmed after it: rows are marked published only
then. When the broker turns out to be a new one, the relay stops, lets the guard establish the
new epoch (topics and marker) and mark the events consumers may have missed as unpublished, and
publishes them again in outbox order.

A relay given `fast_topics` publishes their pending rows before any other (`shared.outbox_lanes`):
order is kept per topic, so per lead within a lane, and a backlog of bulk rows never holds up
a fast one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.broker_epoch import BrokerEpoch
from shared.db import Database, insert_ignoring_conflicts
from shared.metrics import ServiceMetrics
from shared.outages import OutageLog, is_outage
from shared.outbox import Outbox, OutboxRow
from shared.outbox_lanes import LaneQueue
from shared.tracing import record_headers

__all__ = ["IDLE_POLL_SECONDS", "BrokerChangedError", "BrokerGuard", "OutboxRelay"]

logger = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 2.0
"""Longest wait of a quiet relay on SQLite between two looks at its table (a commit of this
process wakes it at once; the look finds what another process wrote)."""

_READ_THE_TABLE = -1
"""A last published id no row id follows: the relay reads the table instead of taking the
rows handed over."""


class BrokerGuard(Protocol):
    """Which broker epoch acknowledgements are trusted in (see `shared.broker_recovery`)."""

    @property
    def trusted(self) -> BrokerEpoch | None: ...

    async def recover(self) -> BrokerEpoch: ...

    async def unchanged(self, epoch: BrokerEpoch) -> bool: ...

    def forget(self) -> None: ...


class BrokerChangedError(RuntimeError):
    """The broker was replaced around a send: its acknowledgements are not trusted."""


class OutboxRelay:
    """Publishes committed outbox rows to Kafka and marks them published once acknowledged."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        retention: timedelta = timedelta(hours=24),
        mark_after: float = 0.1,
        metrics: ServiceMetrics | None = None,
        guard: BrokerGuard | None = None,
        fast_topics: Collection[str] = (),
        written_elsewhere: bool = False,
    ) -> None:
        self.db = db
        self.written_elsewhere = written_elsewhere
        """Another process writes rows to this outbox (and relays none): on SQLite, where
        nothing wakes this relay for them, it keeps looking every `poll_seconds`."""
        self.guard = guard
        self._epoch: BrokerEpoch | None = None
        """The epoch the rows in flight and in `_unmarked` were sent in."""
        self.outbox = outbox
        self.tables = outbox.tables
        self.producer = producer
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = retention
        self.mark_after = mark_after
        self.metrics = metrics
        self.published = 0
        self._next_purge_at = 0.0
        self._last_published = 0
        """Id of the last row handed over or read (SQLite path): every pending row up to it is
        published or queued."""
        self._queued: LaneQueue[OutboxRow] = LaneQueue(fast_topics)
        """Rows handed over and not yet published (SQLite path)."""
        self._unmarked: list[int] = []
        self._marker: asyncio.Task[None] | None = None
        outbox.hand_over = db.dialect != "postgresql"
        events = self.tables.events
        pending = (
            select(events.c.id, events.c.event_id, events.c.event_type, events.c.topic,
                   events.c.message_key, events.c.payload, events.c.traceparent,
                   events.c.correlation_id)
            .where(events.c.published_at.is_(None))
            .order_by(events.c.id)
        )
        fast = tuple(fast_topics)
        lanes = ([pending.where(events.c.topic.in_(fast)),
                  pending.where(events.c.topic.not_in(fast))] if fast else [pending])
        self._pending_rows = [lane.limit(bindparam("limit")) for lane in lanes]
        """Per lane, fast first: the first pending rows."""
        self._pending_rows_of_shards = [
            lane.where(events.c.shard.in_(bindparam("shards", expanding=True)))
            .limit(bindparam("limit")) for lane in lanes]
        self._mark = update(events).where(events.c.id.in_(bindparam("ids", expanding=True)))

    async def prepare(self) -> None:
        """Make sure every shard has its lock row."""
        async with self.db.transaction() as session:
            await session.execute(
                insert_ignoring_conflicts(
                    self.tables.shards,
                    self.db.dialect,
                    [{"shard": shard} for shard in range(self.outbox.shards)],
                )
            )

    async def run(self) -> None:
        await self.prepare()
        try:
            await self._relay_forever()
        finally:
            await self._stop_marking()
            await self._mark_before_stopping()

    async def _relay_forever(self) -> None:
        failures = unreadable_marker = quiet_rounds = 0
        outage = OutageLog("outbox relay")
        while True:
            try:
                sent = await self.relay_once()
                quiet_rounds = 0 if sent else quiet_rounds + 1
                while sent == self.batch_size:
                    sent = await self.relay_once()
                await self._purge_now_and_then()
                failures = unreadable_marker = 0
            except asyncio.CancelledError:
                raise
            except BrokerChangedError as error:
                if self.guard is None or self.guard.trusted is None:
                    logger.warning("outbox relay: %s; publishing again in the new epoch", error)
                    continue
                # The epoch is still the known one: its marker could not be read, which is no
                # sign of a new broker, but nothing is marked published until it can be.
                unreadable_marker += 1
                if unreadable_marker == 1:
                    logger.warning("outbox relay: the broker epoch marker cannot be read; "
                                   "publishing waits until it can")
                await asyncio.sleep(min(0.2 * 2 ** (unreadable_marker - 1), 5.0))
                continue
            except Exception as error:
                if is_outage(error):
                    await asyncio.sleep(outage.failed(error))
                    continue
                failures += 1
                logger.exception("outbox relay failed; retrying")
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            outage.recovered()
            await self.outbox.wait_for_work(self._poll_after(quiet_rounds))

    def _poll_after(self, quiet_rounds: int) -> float:
        """Seconds to the next look unless a commit wakes the relay first. On SQLite, where
        this process's commits hand their rows over, a quiet relay looks less and less often
        (up to `IDLE_POLL_SECONDS`); on PostgreSQL every `poll_seconds`, since rows of shards
        another instance held are found by looking."""
        if not self.outbox.hand_over or self.written_elsewhere or quiet_rounds <= 1:
            return self.poll_seconds
        return max(self.poll_seconds, min(self.poll_seconds * 2.0 ** (quiet_rounds - 1),
                                          IDLE_POLL_SECONDS))

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        await self._trust_current_epoch()
        if self.db.dialect == "postgresql":
            return await self._relay_with_shard_locks()
        return await self._relay_single_writer()

    async def _trust_current_epoch(self) -> None:
        """Recover first if the broker's epoch is not known, or not the one rows were sent in:
        what was sent in another epoch is forgotten and read from the table again."""
        if self.guard is None:
            return
        trusted = self.guard.trusted
        if trusted is not None and trusted == self._epoch:
            return
        await self._stop_marking()
        self._unmarked = []
        self._queued.clear()
        self._last_published = _READ_THE_TABLE
        self._epoch = await self.guard.recover()

    async def _confirm(self, epoch: BrokerEpoch | None) -> None:
        """Raise `BrokerChangedError` unless the broker still is the one of `epoch`."""
        if self.guard is not None and epoch is not None and not await self.guard.unchanged(epoch):
            raise BrokerChangedError(f"broker epoch {epoch.id} ended around a send")

    async def _stop_marking(self) -> None:
        if self._marker is not None and not self._marker.done():
            self._marker.cancel()
            await asyncio.gather(self._marker, return_exceptions=True)

    async def _relay_with_shard_locks(self) -> int:
        async with self.db.transaction() as session:
            shards = (
                await session.scalars(
                    select(self.tables.shards.c.shard)
                    .order_by(self.tables.shards.c.shard)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not shards:
                return 0
            rows = await self._pending(session, shards)
            await self._publish(rows)
            if rows:
                await self._confirm(self._epoch)  # else rolled back: the rows stay pending
            await self._mark_published(session, rows)
        return len(rows)

    async def _relay_single_writer(self) -> int:
        """Publish what was handed over, else what the table holds unpublished; marking runs
        behind, so the write lock never stalls publishing."""
        rows = self._handed_over()
        if rows is None:
            async with self.db.reading() as session:
                rows, every_pending_row = await self._not_yet_published(session)
            if rows:
                self._last_published = (max(row.id for row in rows) if every_pending_row
                                        else _READ_THE_TABLE)
        if rows:
            try:
                await self._publish(rows)
            except BaseException:
                self._queued.clear()  # still pending in the table: read again
                self._last_published = _READ_THE_TABLE
                raise
            self._unmarked.extend(row.id for row in rows)
            if self._marker is None or self._marker.done():
                self._marker = asyncio.create_task(self._mark_in_background())
        return len(rows)

    def _handed_over(self) -> list[OutboxRow] | None:
        """A round of the rows this process committed, when they are all that is new: their
        ids run on from the last one handed over without a gap. None: read the table."""
        handed = sorted(self.outbox.take_committed(), key=lambda row: row.id)
        if handed and any(
            row.id != self._last_published + place for place, row in enumerate(handed, start=1)
        ):
            self._queued.clear()  # they are all pending in the table
            return None
        if handed:
            # What does not fit in this round waits for the next, not dropped: a dropped row
            # would show as a gap and make every later round read the table.
            self._queued.extend(handed)
            self._last_published = handed[-1].id
        if not self._queued:
            return None
        return self._queued.take(self.batch_size)

    async def _mark_in_background(self) -> None:
        outage = OutageLog("outbox relay (marking)", first_pause=1.0)
        while self._unmarked:
            await asyncio.sleep(self.mark_after)
            ids = self._unmarked[:]  # dropped once marked: if cancelled, run() marks them
            try:
                await self._confirm(self._epoch)
            except BrokerChangedError:
                if self.guard is not None and self.guard.trusted is None:
                    self.outbox.wake()  # the relay recovers, and forgets these ids
                    return
                continue  # the broker did not answer: ask again before marking
            try:
                async with self.db.transaction() as session:
                    await self._mark_ids(session, ids)
            except Exception as error:
                if is_outage(error):
                    await asyncio.sleep(outage.failed(error))
                    continue
                logger.exception("outbox relay could not mark events published; retrying")
                await asyncio.sleep(1.0)
            else:
                outage.recovered()
                del self._unmarked[:len(ids)]

    async def _mark_before_stopping(self) -> None:
        """Mark what was published and not yet marked, so a restart does not send it again;
        bounded, since stopping must not hang on a database that is down."""
        ids, self._unmarked = self._unmarked, []
        if not ids:
            return
        try:
            async with asyncio.timeout(2.0):
                await self._confirm(self._epoch)
                async with self.db.transaction() as session:
                    await self._mark_ids(session, ids)
        except Exception:  # noqa: BLE001 - they are published again after the restart
            logger.warning("outbox relay stopped with %d events published but not marked",
                           len(ids))

    async def flush_marks(self) -> None:
        """Wait until every published row is marked (tests and shutdown)."""
        while self._marker is not None and not self._marker.done():
            await self._marker

    async def _pending(self, session: AsyncSession, shards: Sequence[int]) -> list[OutboxRow]:
        rows: list[OutboxRow] = []
        for lane in self._pending_rows_of_shards:
            result = await session.execute(
                lane, {"shards": list(shards), "limit": self.batch_size - len(rows)})
            rows.extend(OutboxRow(*row) for row in result)
            if len(rows) >= self.batch_size:
                break
        return rows

    async def _not_yet_published(self, session: AsyncSession) -> tuple[list[OutboxRow], bool]:
        """Unpublished rows, less those this relay published and has yet to mark, fast lane
        first; and whether they are every such row.

        Not "ids past the last one published": SQLite numbers a row one past the highest id
        left, so once the newest rows are deleted (the purge after a quiet day, an erasure),
        new rows take ids already published once."""
        unmarked = set(self._unmarked)
        rows: list[OutboxRow] = []
        for lane in self._pending_rows:
            room = self.batch_size - len(rows)
            if room <= 0:
                return rows, False
            result = (await session.execute(lane, {"limit": room + len(unmarked)})).all()
            fresh = [OutboxRow(*row) for row in result if row.id not in unmarked]
            rows.extend(fresh[:room])
            if len(result) == room + len(unmarked) or len(fresh) > room:
                return rows, False
        return rows, True

    async def _publish(self, rows: Sequence[OutboxRow]) -> None:
        pending = [
            await self.producer.send(
                row.topic,
                value=row.payload.encode(),
                key=row.message_key.encode(),
                headers=[
                    ("event_type", row.event_type.encode()),
                    ("event_id", row.event_id.encode()),
                    *record_headers(row.traceparent, row.correlation_id),
                ],
            )
            for row in rows
        ]
        try:
            await asyncio.gather(*pending)
        except KafkaError:
            if self.guard is not None:
                self.guard.forget()  # verify the broker before anything else is sent
            raise
        self.published += len(rows)
        if self.metrics is not None:
            for row in rows:
                self.metrics.events_published.labels(row.event_type).inc()

    async def _mark_published(self, session: AsyncSession, rows: Sequence[OutboxRow]) -> None:
        if rows:
            await self._mark_ids(session, [row.id for row in rows])

    async def _mark_ids(self, session: AsyncSession, ids: Sequence[int]) -> None:
        await session.execute(
            self._mark, {"ids": list(ids), "published_at": self.outbox.clock.now()})

    async def _purge_now_and_then(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time >= self._next_purge_at:
            self._next_purge_at = loop_time + 60.0
            await self.purge_published()

    async def purge_published(self) -> None:
        events = self.tables.events
        cutoff = self.outbox.clock.now() - self.retention
        async with self.db.transaction() as session:
            await session.execute(
                delete(events).where(
                    events.c.published_at.is_not(None), events.c.published_at < cutoff
                )
            )

    async def backlog(self) -> int:
        """Rows not yet marked published (including any this relay sent but has yet to mark)."""
        events = self.tables.events
        async with self.db.reading() as session:
            count = await session.scalar(
                select(func.count()).select_from(events).where(events.c.published_at.is_(None))
            )
        return int(count or 0)
