"""Which broker the services talk to: an epoch marker record that only a new, empty broker lacks.

The embedded broker keeps everything in memory: a restart brings up an empty broker on the same
address, without topics, records or committed offsets, and nothing in the Kafka protocol says
so (its cluster id is the same). So the first service that finds the marker topic empty writes
a record with a fresh id into it, and every service takes the first record of its partition 0
as the broker's epoch. A new broker has no marker, so its epoch is a new id; Apache Kafka keeps
the marker (the topic is created with unlimited retention), so its epoch never changes, and
the detection never fires there.

A marker is written only once the data topics exist, so an acknowledgement is trusted only
when it came from a broker whose epoch was known before the send and still is after it
(`unchanged`): what tansu acknowledges in the seconds after a restart, before the topics are
created again, may be lost.

Only a definite answer counts as a change: no record on the marker partition, or a different
one. A read that fails or times out raises `EpochUnknownError`, and nothing is decided on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from shared.clock import Clock, SystemClock
from shared.kafka import TopicKeeper, build_consumer, ensure_kept_topic
from shared.settings import ServiceSettings

logger = logging.getLogger(__name__)

MARKER_KEY = b"broker-epoch"


@dataclass(frozen=True)
class BrokerEpoch:
    """One broker's life: from the moment its marker was written until it loses its memory."""

    id: str
    started_at: datetime
    started_by: str


class EpochUnknownError(RuntimeError):
    """The marker could not be read; nothing may be concluded about the broker."""


def epoch_topic(settings: ServiceSettings) -> str:
    return f"{settings.kafka_topic_prefix}.broker-epoch"


class BrokerEpochs:
    """Reads, writes and remembers the epoch of the broker this process talks to."""

    def __init__(
        self,
        settings: ServiceSettings,
        producer: AIOKafkaProducer,
        *,
        clock: Clock | None = None,
        read_timeout: float = 5.0,
        topics: TopicKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics or TopicKeeper(settings, settings.topics.all)
        """What makes sure the service's topics exist before the epoch is written (the
        runtime's own keeper, so that both use one admin client)."""
        self._owns_topics = topics is None
        self.producer = producer
        self.clock = clock or SystemClock()
        self.read_timeout = read_timeout
        self.topic = epoch_topic(settings)
        self.partition = TopicPartition(self.topic, 0)
        self.current: BrokerEpoch | None = None
        """The epoch acknowledgements are trusted in; None until established, and again once
        the broker was found to be a new one."""
        self.last_known: BrokerEpoch | None = None
        """The epoch established last, kept while a new one is being established."""
        self._listeners: list[Callable[[BrokerEpoch], None]] = []
        self._reader: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()
        self._establishing = asyncio.Lock()

    def on_new_broker(self, listener: Callable[[BrokerEpoch], None]) -> None:
        """Call `listener` with the new epoch each time the broker turns out to be a new one
        (not when the first epoch of this process is established)."""
        self._listeners.append(listener)

    async def stop(self) -> None:
        if self._owns_topics:
            await self.topics.close()
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def read(self) -> BrokerEpoch | None:
        """The broker's epoch; None when it has no marker (a new broker)."""
        async with self._reading:
            try:
                async with asyncio.timeout(self.read_timeout):
                    return await self._read_first_marker()
            except (KafkaError, OSError, TimeoutError) as error:
                await self._drop_reader()
                raise EpochUnknownError(f"cannot read {self.topic}: {error!r}") from error

    async def _read_first_marker(self) -> BrokerEpoch | None:
        reader = await self._started_reader()
        # Paused between reads: an assigned partition is fetched again and again in the
        # background, which kept every idle service polling the broker 50 times a second.
        reader.resume(self.partition)
        try:
            await reader.seek_to_beginning(self.partition)
            while True:
                batch = await reader.getmany(self.partition, timeout_ms=200, max_records=1)
                records = batch.get(self.partition)
                if records:
                    return _decode(records[0].value)
                highwater = reader.highwater(self.partition)
                if highwater is not None and highwater <= await reader.position(self.partition):
                    return None
        finally:
            reader.pause(self.partition)

    async def _started_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            # No topics: a group member in name only, its partition assigned by hand, so the
            # client settings (security included) are the consumers' own.
            reader = build_consumer(self.settings, ())
            await reader.start()
            reader.assign([self.partition])
            self._reader = reader
        return self._reader

    async def _drop_reader(self) -> None:
        """A failed read leaves the client in a state not worth reasoning about: start over."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.stop()
            except Exception:
                logger.debug("epoch reader did not stop cleanly", exc_info=True)

    async def unchanged(self, epoch: BrokerEpoch) -> bool:
        """True when the broker still is the one of `epoch`: acknowledgements it gave since
        `epoch` was known can be trusted. False forgets the current epoch."""
        try:
            found = await self.read()
        except EpochUnknownError:
            return False
        if found == epoch:
            return True
        if self.current == epoch:
            self.current = None
            logger.warning("broker epoch %s is over: the broker lost its records", epoch.id)
        return False

    def forget(self) -> None:
        """Trust no acknowledgement until the epoch is established again."""
        self.current = None

    async def establish(self) -> BrokerEpoch:
        """Make sure the topics and the marker exist, then return (and remember) the epoch.

        Retries until the broker answers; only one call works at a time.
        """
        async with self._establishing:
            failures = 0
            while True:
                try:
                    epoch = await self._establish_once()
                except (KafkaError, OSError, TimeoutError, EpochUnknownError) as error:
                    failures += 1
                    logger.warning("broker epoch not established yet (%s); retrying",
                                   type(error).__name__)
                    await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                    continue
                if epoch is not None:
                    # The topics exist now, with the partitions they keep for the epoch: send
                    # by those, not by what the producer saw while the broker came back.
                    await self.producer.client.force_metadata_update()
                    return self._remember(epoch)

    async def _establish_once(self) -> BrokerEpoch | None:
        await self.topics.ensure()
        await ensure_kept_topic(self.settings, self.topic)
        epoch = await self.read()
        if epoch is not None:
            return epoch
        marker = BrokerEpoch(str(uuid.uuid4()), self.clock.now(), self.settings.service_name)
        await self.producer.send_and_wait(
            self.topic, value=_encode(marker), key=MARKER_KEY, partition=0)
        # Another service may have written its marker first: the first record is the epoch.
        return await self.read()

    def _remember(self, epoch: BrokerEpoch) -> BrokerEpoch:
        previous, self.last_known, self.current = self.last_known, epoch, epoch
        if previous is not None and previous != epoch:
            logger.warning("new broker epoch %s (written by %s at %s)", epoch.id,
                           epoch.started_by, epoch.started_at.isoformat())
            for listener in self._listeners:
                listener(epoch)
        return epoch


def _encode(epoch: BrokerEpoch) -> bytes:
    return json.dumps({"epoch": epoch.id, "started_at": epoch.started_at.isoformat(),
                       "started_by": epoch.started_by}).encode()


def _decode(value: bytes | None) -> BrokerEpoch:
    try:
        fields = json.loads(value or b"")
        return BrokerEpoch(str(fields["epoch"]), datetime.fromisoformat(fields["started_at"]),
                           str(fields.get("started_by", "")))
    except (ValueError, KeyError, TypeError) as error:
        raise EpochUnknownError(f"unreadable broker epoch marker: {value!r}") from error
