"""A broker that lost its records: the outbox publishes the window again, consumers apply only
what they missed, in order; nothing a new broker acknowledged before its epoch is trusted.
Real broker process, real databases."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker, free_port
from shared.broker_epoch import BrokerEpochs, EpochUnknownError
from shared.broker_recovery import BrokerRecovery
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import LeadProfile, LeadReceived, LeadReceivedData
from shared.kafka import build_consumer, build_producer
from shared.outbox import Outbox
from shared.outbox_relay import BrokerChangedError, OutboxRelay
from shared.settings import ServiceSettings
from tests.shared.conftest import INBOX, OUTBOX
from tests.support import eventually

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it is killed and restarted."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture
def settings(own_broker: EmbeddedBroker) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap_servers=own_broker.bootstrap_servers,
                           kafka_topic_prefix="recovery", kafka_topic_partitions=2,
                           kafka_fetch_max_wait_ms=10)


@pytest.fixture
async def producer(settings: ServiceSettings) -> AsyncIterator[AIOKafkaProducer]:
    running = build_producer(settings)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def epochs(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> AsyncIterator[BrokerEpochs]:
    watching = BrokerEpochs(settings, producer, read_timeout=2.0)
    yield watching
    await watching.stop()


@pytest.fixture
def outbox(settings: ServiceSettings) -> Outbox:
    return Outbox(OUTBOX, topic=settings.topics.leads, shards=4)


@pytest.fixture
async def relay(
    database: Database, outbox: Outbox, producer: AIOKafkaProducer, epochs: BrokerEpochs
) -> OutboxRelay:
    recovery = BrokerRecovery(epochs, database, OUTBOX, INBOX, window=timedelta(minutes=10))
    relaying = OutboxRelay(database, outbox, producer, guard=recovery, mark_after=0.01)
    await relaying.prepare()
    return relaying


def event(lead_id: str, number: int) -> LeadReceived:
    return LeadReceived(
        producer="test", lead_id=lead_id, correlation_id=str(number),
        data=LeadReceivedData(lead=LeadProfile(email=f"{lead_id}.{number}@example.com")),
    )


async def write(database: Database, outbox: Outbox, events: list[LeadReceived]) -> None:
    async with database.transaction() as session:
        await outbox.add(session, *events)


async def drain(relay: OutboxRelay) -> None:
    while await relay.relay_once():
        pass
    await relay.flush_marks()


async def unpublished(database: Database) -> int:
    async with database.reading() as session:
        return int(await session.scalar(
            select(func.count()).select_from(OUTBOX.events)
            .where(OUTBOX.events.c.published_at.is_(None))) or 0)


@contextlib.asynccontextmanager
async def consuming(
    settings: ServiceSettings, database: Database, applied: list[tuple[str, str]]
) -> AsyncIterator[EventConsumer]:
    """A consumer of the leads topic that records each event it applies."""
    async def record(session: AsyncSession, received: Any) -> None:
        applied.append((received.lead_id, received.correlation_id))

    consumer = EventConsumer(
        name="sample", db=database, inbox=INBOX,
        consumer=build_consumer(settings, [settings.topics.leads]),
        handlers={"lead.received": record},
    )
    running = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def per_lead(events: list[tuple[str, str]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = defaultdict(list)
    for lead_id, number in events:
        order[lead_id].append(number)
    return dict(order)


async def test_a_new_broker_gets_the_events_again_and_consumers_apply_what_they_missed(
    own_broker: EmbeddedBroker, settings: ServiceSettings, database: Database,
    outbox: Outbox, relay: OutboxRelay, epochs: BrokerEpochs,
) -> None:
    written = [event(f"lead-{number % 3}", number) for number in range(20)]
    await write(database, outbox, written[:10])
    await drain(relay)
    applied: list[tuple[str, str]] = []
    async with consuming(settings, database, applied):
        await eventually(lambda: asyncio.sleep(0, len(applied)), until=lambda n: n >= 10)
    # Published and acknowledged, but read by nobody before the broker loses them.
    await write(database, outbox, written[10:])
    await drain(relay)
    assert await unpublished(database) == 0
    own_broker.restart()
    assert epochs.current is not None
    assert not await epochs.unchanged(epochs.current)  # as the runtime checks now and then

    await drain(relay)
    assert await unpublished(database) == 0
    assert relay.published == 10 + 10 + 20, "the whole window is published again"
    applied.clear()
    async with consuming(settings, database, applied) as consumer:
        await eventually(lambda: asyncio.sleep(0, (len(applied), consumer.duplicates)),
                         until=lambda seen: seen >= (10, 10))
        await asyncio.sleep(0.3)  # time for anything more to arrive, which it must not
    missed = [(item.lead_id, str(item.correlation_id)) for item in written[10:]]
    assert sorted(applied) == sorted(missed), "applied exactly the events missed"
    assert per_lead(applied) == per_lead(missed), "each lead's events in outbox order"
    assert consumer.duplicates == 10, "the events applied before were dropped"


async def test_what_a_new_broker_acknowledged_before_its_epoch_is_not_trusted(
    own_broker: EmbeddedBroker, database: Database, outbox: Outbox, relay: OutboxRelay,
    epochs: BrokerEpochs,
) -> None:
    await write(database, outbox, [event("lead-early", number) for number in range(3)])
    await drain(relay)
    own_broker.restart()
    await write(database, outbox, [event("lead-late", number) for number in range(3)])
    # The relay does not know yet: the new broker, without its topics, takes the send.
    with contextlib.suppress(BrokerChangedError, KafkaError):
        await relay.relay_once()
    await relay.flush_marks()
    assert await unpublished(database) == 3, "marked published on an untrusted acknowledgement"
    assert epochs.current is None

    await drain(relay)
    assert await unpublished(database) == 0
    assert epochs.current is not None and await epochs.unchanged(epochs.current)


async def test_a_service_restarted_on_a_broker_that_kept_its_records_publishes_nothing_again(
    settings: ServiceSettings, producer: AIOKafkaProducer, database: Database, outbox: Outbox,
    relay: OutboxRelay, epochs: BrokerEpochs,
) -> None:
    await write(database, outbox, [event("lead-kept", number) for number in range(3)])
    await drain(relay)
    restarted = BrokerEpochs(settings, producer, read_timeout=2.0)
    try:
        recovery = BrokerRecovery(restarted, database, OUTBOX, INBOX,
                                  window=timedelta(minutes=10))
        assert await recovery.recover() == epochs.current
        assert await unpublished(database) == 0, "the same broker is no reason to publish again"
    finally:
        await restarted.stop()


async def test_while_the_epoch_marker_cannot_be_read_the_relay_waits_instead_of_resending(
    database: Database, outbox: Outbox, relay: OutboxRelay, epochs: BrokerEpochs,
    producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await write(database, outbox, [event("lead-before", 0)])
    await drain(relay)

    async def unreadable() -> None:
        raise EpochUnknownError("the marker's partition has no leader")

    sends = 0
    send = producer.send

    async def counted_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal sends
        sends += 1
        return await send(*args, **kwargs)

    monkeypatch.setattr(epochs, "read", unreadable)
    monkeypatch.setattr(producer, "send", counted_send)
    await write(database, outbox, [event("lead-during", 0)])
    relaying = asyncio.create_task(relay.run())
    await asyncio.sleep(1.5)
    relaying.cancel()
    await asyncio.gather(relaying, return_exceptions=True)
    # A pause that grows from 0.2 s: a handful of tries, not a send every turn of the loop.
    assert 1 <= sends <= 6, sends
    assert await unpublished(database) == 1, "marked published without a readable epoch"
