"""What every service runs beside its HTTP API: database, outbox relay, consumer, background loops.

`ServiceRuntime` is entered from a FastAPI lifespan. It creates the topics, starts the Kafka
producer and the outbox relay, the event consumer when the service consumes events, and any
extra background loops the service names. The relay publishes in the broker epoch it has
verified (`shared.broker_recovery`); when the broker turns out to be a new one, the relay
publishes the outbox's recent events again and the consumer reads from the beginning. Each
loop is supervised: if it dies it is logged and restarted after a pause, so one failure never
silently stops a service; if it died of a database outage, the supervisor logs one warning,
probes the database with a growing pause and restarts the loop once the database answers
(`shared.outages.OutageLog`). Nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from shared.broker_epoch import BrokerEpoch, BrokerEpochs
from shared.broker_recovery import BrokerRecovery
from shared.clock import Clock, SystemClock
from shared.consumer import EventConsumer, Handler
from shared.db import Database
from shared.erasure import WalScrubber
from shared.inbox import InboxTables, purge_processed
from shared.kafka import TopicKeeper, build_consumer, build_producer
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics
from shared.outages import OutageLog, is_outage
from shared.outbox import Outbox, OutboxTables
from shared.outbox_relay import OutboxRelay
from shared.settings import ServiceSettings

logger = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 2.0
"""A readiness probe whose database does not answer in this time reports it unreachable."""

BackgroundLoop = Callable[[], Awaitable[None]]
PROCESSED_PURGE_SECONDS = 3600.0


@dataclass(frozen=True)
class Subscription:
    """Topics one consumer reads and what it does with their events (`ServiceRuntime.subscribe`)."""

    topics: tuple[str, ...]
    handlers: Mapping[str, Handler]
    consumer_factory: Callable[..., EventConsumer]
    slow_topics: tuple[str, ...]
    lane: str
    idle_fetch_wait_ms: int | None = None
    """The fetch wait once idle, when not `kafka_idle_fetch_max_wait_ms`."""


class ServiceRuntime:
    """Owns a service's connections and background tasks for the lifetime of its process."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        outbox_tables: OutboxTables,
        inbox_tables: InboxTables,
        publish_topic: str,
        clock: Clock | None = None,
        database: Database | None = None,
        relay_fast_topics: Sequence[str] = (),
        relay: bool = True,
        outbox_written_elsewhere: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = database or Database(settings.database_url)
        self.outbox = Outbox(
            outbox_tables, topic=publish_topic, shards=settings.outbox_shards, clock=self.clock
        )
        self.inbox_tables = inbox_tables
        self.relay_fast_topics = tuple(relay_fast_topics)
        """Topics whose outbox rows the relay publishes before any other (`shared.outbox_relay`)."""
        self.relaying = relay
        """False: this process publishes nothing itself; another process of the service relays
        the rows it writes to the outbox."""
        self.outbox_written_elsewhere = outbox_written_elsewhere
        """True: another process writes to the outbox this one relays (`relay=False` there)."""
        self.scrubber = WalScrubber(self.db)
        """Empties SQLite's write-ahead log after an erasure (`shared.erasure`)."""
        self.metrics = ServiceMetrics(settings.service_name)
        self.subscriptions: list[Subscription] = []
        self.keyring: KeyRing | None = None
        """The leads' data keys, for a service that consumes or re-publishes sealed events
        (`use_lead_keys`)."""
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.epochs: BrokerEpochs | None = None
        self.recovery: BrokerRecovery | None = None
        self.consumers: dict[str, EventConsumer] = {}
        """The running consumers by lane ("" for the first subscription's)."""
        self.topic_keeper = TopicKeeper(settings, settings.topics.all)
        self._loops: dict[str, BackgroundLoop] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(
        self,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        *,
        consumer_factory: Callable[..., EventConsumer] = EventConsumer,
        slow_topics: Sequence[str] = (),
        lane: str = "",
        idle_fetch_wait_ms: int | None = None,
    ) -> None:
        """Consume `topics` into `handlers` (event type -> handler) once the runtime starts.

        Called after construction because handlers usually publish through this runtime's outbox.
        `consumer_factory` takes `EventConsumer`'s keyword arguments: a service may pass a
        subclass that applies its batches faster. `slow_topics` (some of `topics`) are fetched
        in short visits every `kafka_slow_topic_interval_ms`, not in every fetch.

        `lane`: a second subscription's name. Each lane is a consumer of its own, in the
        consumer group `<group>-<lane>`, with its own fetches: a topic read in bulk never holds
        up the records of the first subscription's topics. `idle_fetch_wait_ms`: the lane's
        fetch wait once idle, if not `kafka_idle_fetch_max_wait_ms` (a lane nobody waits for
        may poll an idle broker less often).
        """
        self.subscriptions.append(Subscription(
            tuple(topics), dict(handlers), consumer_factory, tuple(slow_topics), lane,
            idle_fetch_wait_ms))

    def use_lead_keys(self) -> KeyRing | None:
        """Open the sealed events this service consumes and seal those it publishes with
        keys fetched from ingest (`shared.lead_keys`); None when `lead_keys_url` is empty."""
        if not self.settings.lead_keys_url:
            logger.warning("LEADRELAY_LEAD_KEYS_URL is empty: sealed events are skipped and "
                           "this service's events go out unsealed")
            return None
        self.keyring = KeyRing(self.settings.lead_keys_url, self.settings.lead_keys_bearer)
        self.outbox.encoder = self.keyring.encode
        return self.keyring

    def add_loop(self, name: str, loop: BackgroundLoop) -> None:
        """Register a background loop to run (supervised) once the runtime starts."""
        self._loops[name] = loop

    async def __aenter__(self) -> Self:
        # The keeper's admin client then serves the broker epoch's start and the later checks.
        await self.topic_keeper.ensure(attempts=30)
        self.producer = build_producer(self.settings)
        await self.producer.start()
        self.epochs = BrokerEpochs(self.settings, self.producer, clock=self.clock,
                                   topics=self.topic_keeper)
        self.epochs.on_new_broker(self._new_broker)
        republish_window = timedelta(minutes=self.settings.outbox_republish_minutes)
        self.recovery = BrokerRecovery(
            self.epochs, self.db, self.outbox.tables, self.inbox_tables,
            window=republish_window, metrics=self.metrics, clock=self.clock,
        )
        if self.relaying:
            self.relay = OutboxRelay(
                self.db,
                self.outbox,
                self.producer,
                batch_size=self.settings.outbox_batch_size,
                poll_seconds=self.settings.outbox_poll_seconds,
                # Rows are kept at least as long as a new broker may need them again.
                retention=max(timedelta(hours=self.settings.outbox_retention_hours),
                              republish_window),
                metrics=self.metrics,
                guard=self.recovery,
                fast_topics=self.relay_fast_topics,
                written_elsewhere=self.outbox_written_elsewhere,
            )
            self._start("outbox-relay", self.relay.run)
        self._start("topic-keeper", self._keep_topics)
        for subscription in self.subscriptions:
            self._start(f"consumer {subscription.lane}".strip(),
                        partial(self._run_consumer, subscription))
        if self.subscriptions:
            self._start("processed-event-retention", self._purge_processed_events)
        for name, loop in self._loops.items():
            self._start(name, loop)
        return self

    @property
    def handlers(self) -> dict[str, Handler]:
        """Every subscription's handlers, by event type (a dead letter is applied again with
        its type's)."""
        return {event_type: handler for subscription in self.subscriptions
                for event_type, handler in subscription.handlers.items()}

    @property
    def consumer(self) -> EventConsumer | None:
        """The first subscription's consumer, once running."""
        return self.consumers.get(self.subscriptions[0].lane) if self.subscriptions else None

    async def _run_consumer(self, subscription: Subscription) -> None:
        group = self.settings.consumer_group
        consumer = subscription.consumer_factory(
            name=self.settings.service_name,
            db=self.db,
            inbox=self.inbox_tables,
            consumer=build_consumer(
                self.settings, subscription.topics,
                group_id=f"{group}-{subscription.lane}" if subscription.lane else group),
            handlers=subscription.handlers,
            clock=self.clock,
            metrics=self.metrics,
            commit_interval=self.settings.kafka_commit_interval_ms / 1000,
            slow_topics=subscription.slow_topics,
            slow_interval=self.settings.kafka_slow_topic_interval_ms / 1000,
            # Long enough for the fetch in flight to end and one more to name the partitions.
            slow_window=3 * self.settings.kafka_fetch_max_wait_ms / 1000,
            keyring=self.keyring,
            fetch_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            idle_fetch_wait_ms=self.settings.kafka_idle_fetch_max_wait_ms
            if subscription.idle_fetch_wait_ms is None else subscription.idle_fetch_wait_ms,
        )
        self.consumers[subscription.lane] = consumer
        await consumer.run()

    async def purge_processed_events(self) -> int:
        """Delete processed-event records past `processed_event_retention_hours`."""
        before = self.clock.now() - timedelta(hours=self.settings.processed_event_retention_hours)
        async with self.db.transaction() as session:
            return await purge_processed(session, self.inbox_tables, before)

    async def _purge_processed_events(self) -> None:
        while True:
            await self.purge_processed_events()
            await asyncio.sleep(PROCESSED_PURGE_SECONDS)

    async def _keep_topics(self) -> None:
        """Re-create the topics if the broker lost them (the embedded broker keeps no disk),
        and see whether it is still the same broker even when nothing is being published. A
        new one is recovered by the relay; a process that relays nothing establishes the epoch
        itself (at start too), so that a new broker still makes its consumers start over."""
        if not self.relaying and self.epochs is not None:
            await self.epochs.establish()
        while True:
            await asyncio.sleep(self.settings.kafka_topic_check_seconds)
            try:
                await self.topic_keeper.ensure()
                epochs = self.epochs
                if epochs is None:
                    continue
                if self.relaying:
                    if epochs.current is not None and not await epochs.unchanged(epochs.current):
                        self.outbox.wake()  # the relay recovers
                elif epochs.current is None or not await epochs.unchanged(epochs.current):
                    await epochs.establish()
            except Exception as error:  # noqa: BLE001 - the next round tries again
                logger.warning("cannot check topics: %s", type(error).__name__)

    def _new_broker(self, epoch: BrokerEpoch) -> None:
        for consumer in self.consumers.values():
            consumer.start_over()

    def _start(self, name: str, loop: BackgroundLoop) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: BackgroundLoop) -> None:
        failures = 0
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_outage(error) and not await self._database_answers():
                    await self._wait_for_database(OutageLog(name), error)
                    continue
                failures += 1
                logger.exception("%s stopped unexpectedly; restarting", name)
                await asyncio.sleep(min(0.5 * failures, 10.0))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await _cancel_all(self._tasks)
        await _within(STOP_STEP_SECONDS, "topic keeper", self.topic_keeper.close())
        if self.epochs is not None:
            await _within(STOP_STEP_SECONDS, "epoch reader", self.epochs.stop())
        if self.producer is not None:
            await _within(STOP_STEP_SECONDS, "producer", self.producer.stop())
        if self.keyring is not None:
            await self.keyring.close()
        await _within(STOP_STEP_SECONDS, "log scrubber", self.scrubber.wait())
        await self.db.dispose()

    async def refresh_metrics(self) -> None:
        """Update the gauges that need a query; called when `/metrics` is scraped."""
        if self.relay is not None:
            self.metrics.outbox_backlog.set(await self.relay.backlog())
        for consumer in self.consumers.values():
            for (topic, partition), lag in (await consumer.lag()).items():
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    async def _wait_for_database(self, outage: OutageLog, error: BaseException) -> None:
        """Return once the database answers (or fails otherwise than by an outage), probing
        it with `outage`'s growing pauses."""
        while True:
            await asyncio.sleep(outage.failed(error))
            try:
                await self._probe_database()
            except Exception as failure:  # noqa: BLE001 - the restarted loop meets anything else
                if not is_outage(failure):
                    return
                error = failure
                continue
            outage.recovered()
            return

    async def _probe_database(self) -> None:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), self.db.reading() as session:
            await session.execute(text("SELECT 1"))

    async def _database_answers(self) -> bool:
        try:
            await self._probe_database()
        except Exception:  # noqa: BLE001 - any failure means it does not
            return False
        return True

    async def readiness(self) -> dict[str, bool]:
        """What /readyz reports: each dependency and loop, True when it is working."""
        checks: dict[str, bool] = {"database": await self._database_answers()}
        checks["loops"] = all(not task.done() for task in self._tasks)
        if self.subscriptions:
            checks["consumer"] = all(
                subscription.lane in self.consumers
                and self.consumers[subscription.lane].ready.is_set()
                for subscription in self.subscriptions)
        return checks


STOP_STEP_SECONDS = 10.0
"""The longest one step of stopping may take: a broker that no longer answers must not keep a
stopping service alive (what it held is in the database, and the outbox sends it again)."""


async def _within(seconds: float, step: str, awaitable: Awaitable[Any]) -> None:
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        logger.warning("stopping: %s did not stop within %.0f s; going on", step, seconds)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the background loops and wait for them; cancel again what swallowed the first
    cancellation (a client library awaiting inside a loop may), for `STOP_STEP_SECONDS`."""
    pending = [task for task in tasks if not task.done()]
    deadline = asyncio.get_running_loop().time() + STOP_STEP_SECONDS
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a loop that ended on its own was logged already
    if pending:
        logger.warning("stopping: %s did not stop within %.0f s; going on",
                       ", ".join(task.get_name() for task in pending), STOP_STEP_SECONDS)
