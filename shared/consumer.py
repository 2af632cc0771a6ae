"""The consumer loop: apply a batch of events in one transaction, then commit the offsets.

For each batch returned by `getmany`, the loop opens one database transaction; for each message
it records the event in the processed-event table (skipping it if it is already there) and runs
the handler registered for its type inside a savepoint. Offsets are committed to Kafka only
after the database commit, so a crash at any point redelivers events rather than losing them,
and the processed-event record makes the redelivery harmless. The commit of the offsets runs
beside the next batch instead of before it (one commit in flight, with the latest offsets),
and at most once per `commit_interval`: a busy partition costs a few commits a second, not one
per batch, and a crash redelivers at most that interval's events, which change nothing.

When the broker turns out to be a new one (`start_over`, called by the runtime), the offsets
of the old broker mean nothing on it: the loop drops the commits it had not made, reads every
partition again from its beginning and commits that, so neither a stale position nor a stale
commit makes it skip what the outboxes publish again.

Events whose personal fields are sealed (`shared.sealing`) are opened with the leads' data keys:
a consumer given a `KeyRing` fetches the keys its batch lacks in one request before the
transaction; an event whose key is gone (an erased lead's) is skipped like an event of a type
it does not handle.

Errors are split in two. A database or broker outage aborts the batch: it is rolled back, the
consumer seeks back to the batch's first offsets (nothing of it is recorded, nor its offsets
committed) and tries again after a growing pause, logging the outage once when it starts and
once when it ends (`shared.outages.OutageLog`). A message that cannot be applied (invalid
contract, or a handler raising anything else) is stored in the dead-letter table and the loop
moves on, so one bad message never blocks a partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared import tracing
from shared.clock import Clock, SystemClock
from shared.db import Database, insert_ignoring_conflicts, is_outage
from shared.events import Event, UndecodableEventError, decode_event
from shared.idle_backoff import IdleBackoff
from shared.inbox import InboxTables
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics
from shared.outages import OutageLog
from shared.sealing import KeyLookup, is_sealable
from shared.slow_topics import SlowTopics

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Any], Awaitable[None]]
"""Applies one event's effect within the given session; never commits."""

Records = Mapping[TopicPartition, Sequence[ConsumerRecord]]


@dataclass
class _Tally:
    """What one batch did, counted into the metrics only once its transaction committed."""

    applied: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead_lettered: int = 0


class EventConsumer:
    """Consumes topics into handlers, exactly once in effect."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        inbox: InboxTables,
        consumer: AIOKafkaConsumer,
        handlers: Mapping[str, Handler],
        clock: Clock | None = None,
        metrics: ServiceMetrics | None = None,
        commit_interval: float = 0.0,
        slow_topics: Collection[str] = (),
        slow_interval: float = 0.25,
        slow_window: float = 0.03,
        keyring: KeyRing | None = None,
        max_batch: int | None = None,
        fetch_wait_ms: int = 20,
        idle_fetch_wait_ms: int = 0,
        idle_after: float = 2.0,
    ) -> None:
        self.name = name
        self.keyring = keyring
        """Keys of the leads whose sealed events this consumer opens (`shared.lead_keys`)."""
        self._keys: KeyLookup | None = keyring.key_of if keyring is not None else None
        self.db = db
        self.inbox = inbox
        self.consumer = consumer
        self.handlers = dict(handlers)
        self.clock = clock or SystemClock()
        self.metrics = metrics or ServiceMetrics(name)
        self.applied = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.ready = asyncio.Event()
        self.commit_interval = commit_interval
        """Seconds at least between two offset commits."""
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._last_commit = float("-inf")
        self._start_over = False
        self._read_from_beginning = False
        """Set by a new broker until the next assignment, which then starts at offset 0."""
        self._record = insert_ignoring_conflicts(inbox.processed, db.dialect).returning(
            inbox.processed.c.event_id)
        self.slow_topics = SlowTopics(
            consumer, slow_topics, interval=slow_interval, window=slow_window,
            clock=time.monotonic)
        """Topics fetched only in short visits (see `shared.slow_topics`)."""
        self.max_batch = max_batch
        """Records per batch at most (None: the client's `max_poll_records`): a batch holds
        its transaction, on SQLite the whole file's write lock, while it is applied."""
        self.idle = IdleBackoff(
            consumer, busy_wait_ms=fetch_wait_ms, idle_wait_ms=idle_fetch_wait_ms,
            idle_after=idle_after, clock=time.monotonic)

    async def run(self) -> None:
        slow_window = self.slow_topics.window
        await self.consumer.start()
        outage = OutageLog(f"{self.name} consumer")
        try:
            while True:
                if self._start_over:
                    await self._read_again_from_beginning()
                until_change = self.slow_topics.pace()
                records = await self.consumer.getmany(
                    timeout_ms=max(1, int(min(until_change, 1.0) * 1000)),
                    max_records=self.max_batch)
                self.idle.saw(records)
                # A visit must outlast a fetch in flight, however long the wait is now.
                self.slow_topics.window = max(slow_window, 3 * self.idle.wait_ms / 1000)
                self.ready.set()
                if not records:
                    continue
                try:
                    await self._fetch_keys(records)
                    with tracing.consuming(self.name, records):
                        await self.apply(records)
                except Exception as error:
                    if not is_outage(error):
                        raise
                    self._rewind(records)
                    await asyncio.sleep(outage.failed(error))
                    continue
                outage.recovered()
                self._commit_offsets_later(records)
        finally:
            if self._committing is not None:
                await asyncio.gather(self._committing, return_exceptions=True)
            await self.consumer.stop()

    def start_over(self) -> None:
        """The broker is a new one: before the next batch, read every partition again from
        its beginning (events applied already are dropped by the processed-event record)."""
        self._start_over = True

    async def _read_again_from_beginning(self) -> None:
        self._start_over = False
        if self._committing is not None:
            self._committing.cancel()
            await asyncio.gather(self._committing, return_exceptions=True)
        self._uncommitted = {}
        topics = sorted(self.consumer.subscription())
        logger.warning("%s: new broker; reading %s again from the beginning",
                       self.name, ", ".join(topics))
        if not topics:
            return
        self._read_from_beginning = True
        # Subscribing again refreshes the metadata (the new broker's topics may have other
        # partition counts) and rejoins the group; each partition it assigns starts at 0.
        self.consumer.unsubscribe()
        self.consumer.subscribe(topics, listener=_StartAtZero(self))

    def _assigned(self, partitions: Collection[TopicPartition]) -> None:
        """The first assignment since a new broker starts at offset 0; later ones (another
        instance leaving, weeks on) start at the group's offsets on this broker, as usual."""
        if not (self._read_from_beginning and partitions):
            return
        for partition in partitions:
            # Not a position kept from the old broker: past the beginning, it would skip what
            # the outboxes publish again.
            self.consumer.seek(partition, 0)
        self._read_from_beginning = False

    async def _fetch_keys(self, records: Records) -> None:
        """Fetch the keys of the batch's sealed events in one request, before the transaction."""
        if self.keyring is None:
            return
        await self.keyring.prefetch(
            message.key.decode() for messages in records.values() for message in messages
            if message.key and _may_be_sealed(message))

    async def apply(self, records: Records) -> None:
        """Apply every message of the batch in one transaction.

        The fast path runs the handlers back to back. If one raises, the whole transaction is
        rolled back and the batch is applied again with a savepoint around each handler, so
        the failing event goes to the dead-letter table and the others still apply.
        """
        messages = [message for batch in records.values() for message in batch]
        try:
            async with self.db.transaction() as session:
                tally = await self._apply_batch(session, messages, isolate=False)
        except Exception as error:
            if is_outage(error):
                raise
            logger.warning("%s: a handler failed; applying the batch event by event", self.name)
            async with self.db.transaction() as session:
                tally = await self._apply_batch(session, messages, isolate=True)
        self._count(tally)

    async def _apply_batch(
        self, session: AsyncSession, messages: list[ConsumerRecord], *, isolate: bool
    ) -> _Tally:
        tally = _Tally()
        decoded: list[tuple[ConsumerRecord, Event]] = []
        for message in messages:
            try:
                event = decode_event(message.value, self.handlers, self._keys)
            except UndecodableEventError as error:
                await self._dead_letter(session, message, str(error))
                tally.dead_lettered += 1
                continue
            if event is not None:
                decoded.append((message, event))
        fresh = await self._record_processed(session, [event for _, event in decoded])
        for message, event in decoded:
            event_id = str(event.event_id)
            if event_id not in fresh:
                tally.duplicates.append(event.type)
                continue
            fresh.discard(event_id)
            handler = self.handlers[event.type]
            if not isolate:
                await handler(session, event)
                tally.applied.append(event.type)
                continue
            tracing.use_lead_context(event.lead_id)
            try:
                async with session.begin_nested():
                    await handler(session, event)
            except Exception as error:
                if is_outage(error):
                    raise
                logger.exception("%s: handler for %s failed", self.name, event.type)
                await self._dead_letter(session, message, traceback.format_exc())
                tally.dead_lettered += 1
                continue
            tally.applied.append(event.type)
        return tally

    async def _record_processed(self, session: AsyncSession, events: list[Event]) -> set[str]:
        """Record the events as processed; returns the ids that were not recorded before."""
        if not events:
            return set()
        now = self.clock.now()
        rows = [
            {"consumer": self.name, "event_id": str(event.event_id),
             "event_type": event.type, "processed_at": now}
            for event in events
        ]
        return set((await session.scalars(self._record, rows)).all())

    def _count(self, tally: _Tally) -> None:
        self.applied += len(tally.applied)
        self.duplicates += len(tally.duplicates)
        self.dead_lettered += tally.dead_lettered
        for event_type in tally.applied:
            self.metrics.events_applied.labels(event_type).inc()
        for event_type in tally.duplicates:
            self.metrics.events_duplicate.labels(event_type).inc()
        if tally.dead_lettered:
            self.metrics.events_dead_lettered.inc(tally.dead_lettered)

    async def _dead_letter(
        self, session: AsyncSession, message: ConsumerRecord, error: str
    ) -> None:
        value: bytes = message.value or b""
        await session.execute(
            insert(self.inbox.failed).values(
                consumer=self.name,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                message_key=message.key.decode(errors="replace") if message.key else None,
                payload=value.decode(errors="replace"),
                error=error[-4000:],
                failed_at=self.clock.now(),
            )
        )

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark, per assigned partition (as far as fetched)."""
        lags: dict[tuple[str, int], int] = {}
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            if highwater is None:
                continue
            position = await self.consumer.position(partition)
            lags[(partition.topic, partition.partition)] = max(0, highwater - position)
        return lags

    def _rewind(self, records: Records) -> None:
        for partition, messages in records.items():
            if messages and partition in self.consumer.assignment():
                self.consumer.seek(partition, messages[0].offset)

    def _commit_offsets_later(self, records: Records) -> None:
        """Commit the offsets after `records` without holding up the next batch: one commit
        in flight at a time, each carrying the latest offsets of every partition."""
        for partition, messages in records.items():
            if messages:
                self._uncommitted[partition] = messages[-1].offset + 1
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_uncommitted())

    async def _commit_uncommitted(self) -> None:
        loop = asyncio.get_running_loop()
        while self._uncommitted:
            await asyncio.sleep(self._last_commit + self.commit_interval - loop.time())
            self._last_commit = loop.time()
            assigned = self.consumer.assignment()
            offsets = {partition: offset for partition, offset in self._uncommitted.items()
                       if partition in assigned}
            self._uncommitted = {}
            if not offsets:
                continue
            try:
                await asyncio.wait_for(self.consumer.commit(offsets), timeout=10)
            except (KafkaError, TimeoutError) as error:
                # Already applied and recorded: a redelivery after a failed commit is a no-op.
                logger.warning("%s: offset commit failed (%s)", self.name, type(error).__name__)


class _StartAtZero(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts each partition first assigned since a new broker at offset 0 (on a broker with
    retention, an offset before the log start resets to the earliest one)."""

    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.owner._assigned(assigned)


def _may_be_sealed(message: ConsumerRecord) -> bool:
    for name, value in message.headers or ():
        if name == "event_type":
            return is_sealable(bytes(value).decode(errors="replace"))
    return True


class BatchEventConsumer(EventConsumer):
    """`EventConsumer` whose fast path hands a batch's new events to `apply_fresh` together.

    One transaction records the batch in the processed-event table and calls `apply_fresh`
    with the events not seen before, in order, so a service can read and write a whole batch
    in a few statements. If that fails for any reason but an outage (a broken message, a
    handler error, a conflict), the batch is applied again by `EventConsumer.apply`: one
    handler at a time, the failing event dead-lettered.
    """

    async def apply(self, records: Records) -> None:
        try:
            async with self.db.transaction() as session:
                tally = await self._apply_in_bulk(session, records)
        except Exception as error:
            if is_outage(error):
                raise
            logger.warning("%s: batch fast path failed (%s); applying one event at a time",
                           self.name, type(error).__name__)
            await super().apply(records)
            return
        self._count(tally)

    async def apply_fresh(self, session: AsyncSession, events: list[Event]) -> None:
        """Apply events not processed before, in batch order, within `session`."""
        raise NotImplementedError

    async def _apply_in_bulk(self, session: AsyncSession, records: Records) -> _Tally:
        events: list[Event] = []
        for messages in records.values():
            for message in messages:
                # A broken message raises here: the slow path dead-letters it.
                event = decode_event(message.value, self.handlers, self._keys)
                if event is not None:
                    events.append(event)
        tally = _Tally()
        if not events:
            return tally
        new_ids = await self._record_processed(session, events)
        fresh: list[Event] = []
        for event in events:
            if str(event.event_id) in new_ids:
                new_ids.discard(str(event.event_id))
                fresh.append(event)
                tally.applied.append(event.type)
            else:
                tally.duplicates.append(event.type)
        await self.apply_fresh(session, fresh)
        return tally
