"""The outbox relay against a real database and a real broker process."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker, free_port
from shared.clock import ManualClock
from shared.db import Database
from shared.events import LeadProfile, LeadReceived, LeadReceivedData
from shared.kafka import build_producer, ensure_topics
from shared.outbox import Outbox, OutboxRow
from shared.outbox_relay import IDLE_POLL_SECONDS, OutboxRelay
from shared.settings import ServiceSettings
from tests.shared.conftest import OUTBOX
from tests.support import read_topic

pytestmark = pytest.mark.broker

TABLES = OUTBOX


def settings_for(broker: EmbeddedBroker, prefix: str) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                           kafka_topic_prefix=prefix)


@pytest.fixture
async def producer(broker: EmbeddedBroker, topic_prefix: str) -> AsyncIterator[AIOKafkaProducer]:
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings, settings.topics.all)
    running = build_producer(settings)
    await running.start()
    yield running
    await running.stop()


def event(lead_id: str, number: int) -> LeadReceived:
    return LeadReceived(
        producer="test", lead_id=lead_id, correlation_id=str(number),
        data=LeadReceivedData(lead=LeadProfile(email=f"{lead_id}.{number}@example.com")),
    )


async def write(database: Database, outbox: Outbox, events: list[LeadReceived]) -> None:
    async with database.transaction() as session:
        await outbox.add(session, *events)


async def test_committed_events_are_published_in_order_per_lead(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = settings_for(broker, topic_prefix).topics.leads
    outbox = Outbox(TABLES, topic=topic, shards=4)
    written = [event(f"lead-{number % 3}", number) for number in range(30)]
    for start in range(0, 30, 7):
        await write(database, outbox, written[start:start + 7])
    relay = OutboxRelay(database, outbox, producer, batch_size=8)
    await relay.prepare()
    while await relay.relay_once():
        pass
    await relay.flush_marks()
    received = await read_topic(broker.bootstrap_servers, topic, 30)
    assert await relay.backlog() == 0
    order: dict[str, list[str]] = defaultdict(list)
    for item in received:
        order[item["lead_id"]].append(item["correlation_id"])
    for lead_id in order:
        expected = [e.correlation_id for e in written if e.lead_id == lead_id]
        assert order[lead_id] == expected


async def test_rolled_back_events_are_never_published(
    database: Database, producer: AIOKafkaProducer
) -> None:
    outbox = Outbox(TABLES, topic="unused", shards=2)
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await outbox.add(session, event("lead-x", 1))
            raise RuntimeError("the state change failed")
    relay = OutboxRelay(database, outbox, producer)
    await relay.prepare()
    assert await relay.relay_once() == 0
    assert relay.published == 0


async def test_the_commit_that_adds_events_wakes_the_relay_and_nothing_else_does(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    outbox = Outbox(TABLES, topic=settings_for(broker, topic_prefix).topics.leads, shards=2)
    relay = OutboxRelay(database, outbox, producer, poll_seconds=60.0)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)  # the relay's first look finds nothing; it now waits 60 s
        with pytest.raises(RuntimeError):
            async with database.transaction() as session:
                await outbox.add(session, event("lead-wake", 1))
                raise RuntimeError("the state change failed")
        async with database.transaction() as session:
            await session.execute(select(1))  # a commit with no event in it
        await asyncio.sleep(0.3)
        assert relay.published == 0
        await write(database, outbox, [event("lead-wake", 2)])
        for _ in range(40):
            if relay.published:
                break
            await asyncio.sleep(0.05)
        assert relay.published == 1, "the commit did not wake the relay"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


@pytest.fixture
def sqlite_outbox(database: Database, broker: EmbeddedBroker, topic_prefix: str) -> Outbox:
    """An outbox on the leads topic, for what only SQLite's single-writer relay does (marks
    a moment late, rows handed over by the commit)."""
    if database.dialect != "sqlite":
        pytest.skip("only SQLite's single-writer relay path does this")
    return Outbox(TABLES, topic=settings_for(broker, topic_prefix).topics.leads, shards=2)


async def test_a_relay_stopped_before_its_marking_delay_still_marks_what_it_published(
    database: Database, producer: AIOKafkaProducer, sqlite_outbox: Outbox
) -> None:
    outbox = sqlite_outbox
    await write(database, outbox, [event("lead-stop", 1), event("lead-stop", 2)])
    relay = OutboxRelay(database, outbox, producer, mark_after=30.0)
    running = asyncio.create_task(relay.run())
    for _ in range(100):
        if relay.published == 2:
            break
        await asyncio.sleep(0.05)
    assert relay.published == 2
    assert await relay.backlog() == 2, "marked before its delay"
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert await relay.backlog() == 0


class CountingRelay(OutboxRelay):
    """A relay that counts how often it reads the outbox table."""

    reads = 0

    async def _not_yet_published(self, session: AsyncSession) -> tuple[list[OutboxRow], bool]:
        self.reads += 1
        return await super()._not_yet_published(session)


@pytest.fixture
async def counting_relay(
    database: Database, producer: AIOKafkaProducer, sqlite_outbox: Outbox
) -> CountingRelay:
    relay = CountingRelay(database, sqlite_outbox, producer)
    await relay.prepare()
    return relay


async def test_the_relay_publishes_what_its_process_committed_without_reading_it_back(
    database: Database, broker: EmbeddedBroker, counting_relay: CountingRelay
) -> None:
    relay, outbox = counting_relay, counting_relay.outbox
    assert await relay.relay_once() == 0 and relay.reads == 1  # the empty table, read once
    await write(database, outbox, [event("lead-1", 1), event("lead-2", 1)])
    await write(database, outbox, [event("lead-1", 2)])
    assert await relay.relay_once() == 3
    assert relay.reads == 1, "read back rows its own commits handed over"
    await relay.flush_marks()
    assert await relay.backlog() == 0
    received = await read_topic(broker.bootstrap_servers, outbox.topic, 3)
    assert [(item["lead_id"], item["correlation_id"]) for item in received
            if item["lead_id"] == "lead-1"] == [("lead-1", "1"), ("lead-1", "2")]


async def test_more_rows_handed_over_than_a_round_takes_wait_for_the_next_round(
    database: Database, broker: EmbeddedBroker, counting_relay: CountingRelay
) -> None:
    relay, outbox = counting_relay, counting_relay.outbox
    relay.batch_size = 2
    assert await relay.relay_once() == 0
    reads = relay.reads
    await write(database, outbox, [event("lead-big", number) for number in range(5)])
    assert [await relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]
    assert relay.reads == reads + 1, "read the table for rows it had been handed"
    await relay.flush_marks()
    received = await read_topic(broker.bootstrap_servers, outbox.topic, 5)
    assert [item["correlation_id"] for item in received] == ["0", "1", "2", "3", "4"]


async def test_rows_another_writer_committed_in_between_make_the_relay_read_the_table(
    database: Database, broker: EmbeddedBroker, counting_relay: CountingRelay
) -> None:
    relay, ours = counting_relay, counting_relay.outbox
    await write(database, ours, [event("lead-x", 1)])
    assert await relay.relay_once() == 1
    reads = relay.reads
    # Another process (here another outbox) writes between two of ours: its row is a gap.
    await write(database, Outbox(TABLES, topic=ours.topic, shards=2), [event("lead-x", 2)])
    await write(database, ours, [event("lead-x", 3)])
    assert await relay.relay_once() == 2
    assert relay.reads == reads + 1
    await relay.flush_marks()
    received = await read_topic(broker.bootstrap_servers, ours.topic, 3)
    assert [item["correlation_id"] for item in received] == ["1", "2", "3"]


async def test_events_written_after_a_quiet_day_emptied_the_outbox_are_still_published(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Once the purge deleted every row, SQLite numbers new rows from 1 again: below what the
    relay already published, which must not hide them."""
    topic = settings_for(broker, topic_prefix).topics.leads
    clock = ManualClock()
    outbox = Outbox(TABLES, topic=topic, shards=2, clock=clock)
    relay = OutboxRelay(database, outbox, producer, retention=timedelta(hours=24))
    await relay.prepare()
    await write(database, outbox, [event("lead-friday", number) for number in range(3)])
    assert await relay.relay_once() == 3
    await relay.flush_marks()

    clock.advance(timedelta(hours=60))  # the weekend: nothing new, the purge empties the outbox
    await relay.purge_published()
    await write(database, outbox, [event("lead-monday", 1)])
    assert await relay.relay_once() == 1
    await relay.flush_marks()

    received = await read_topic(broker.bootstrap_servers, topic, 4)
    assert [item["lead_id"] for item in received].count("lead-monday") == 1
    assert await relay.backlog() == 0


async def test_an_event_written_after_its_leads_published_events_were_deleted_is_published(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """An erasure deletes the lead's published rows, the newest included, and writes its own
    event in the same transaction: on SQLite it takes an id the relay already published."""
    topic = settings_for(broker, topic_prefix).topics.leads
    outbox = Outbox(TABLES, topic=topic, shards=2)
    relay = OutboxRelay(database, outbox, producer)
    await relay.prepare()
    await write(database, outbox, [event("lead-kept", 1), event("lead-gone", 1)])
    await write(database, outbox, [event("lead-gone", 2)])
    assert await relay.relay_once() == 3
    await relay.flush_marks()
    events = TABLES.events
    async with database.transaction() as session:
        await session.execute(delete(events).where(
            events.c.message_key == "lead-gone", events.c.published_at.is_not(None)))
        await outbox.add(session, event("lead-gone", 3))
    await write(database, outbox, [event("lead-gone", 4)])
    while await relay.relay_once():
        pass
    await relay.flush_marks()
    received = await read_topic(broker.bootstrap_servers, topic, 5)
    assert [item["correlation_id"] for item in received if item["lead_id"] == "lead-gone"] == [
        "1", "2", "3", "4"]
    assert await relay.backlog() == 0


@pytest.mark.postgres
async def test_two_relays_never_publish_an_event_twice(
    database: Database, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("several relays share one database only on PostgreSQL")
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings, settings.topics.all)
    outbox = Outbox(TABLES, topic=settings.topics.leads, shards=8)
    written = [event(f"lead-{number % 20}", number) for number in range(400)]
    await write(database, outbox, written)
    producers = [build_producer(settings) for _ in range(2)]
    for running in producers:
        await running.start()
    try:
        relays = [OutboxRelay(database, outbox, running, batch_size=25) for running in producers]
        await relays[0].prepare()

        async def drain(relay: OutboxRelay) -> None:
            while await relay.backlog():
                await relay.relay_once()

        await asyncio.gather(*(drain(relay) for relay in relays))
    finally:
        for running in producers:
            await running.stop()
    received = await read_topic(broker.bootstrap_servers, settings.topics.leads, 400)
    assert relays[0].published + relays[1].published == 400
    assert len({item["event_id"] for item in received}) == len(received) == 400
    by_lead: dict[str, list[int]] = defaultdict(list)
    for item in received:
        by_lead[item["lead_id"]].append(int(item["correlation_id"]))
    assert all(numbers == sorted(numbers) for numbers in by_lead.values())


async def test_relay_delivers_once_the_broker_comes_back(database: Database) -> None:
    broker = EmbeddedBroker(free_port())
    broker.start()
    settings = settings_for(broker, "outage")
    await ensure_topics(settings, settings.topics.all)
    outbox = Outbox(TABLES, topic=settings.topics.leads, shards=2)
    producer = build_producer(settings)
    await producer.start()
    relay = OutboxRelay(database, outbox, producer, poll_seconds=0.1)
    try:
        broker.stop()
        await write(database, outbox, [event("lead-outage", 1)])
        during_outage = asyncio.create_task(relay.run())
        await asyncio.sleep(1.5)
        during_outage.cancel()
        await asyncio.gather(during_outage, return_exceptions=True)
        assert await relay.backlog() == 1, "marked published while the broker was down"

        broker.start()  # memory storage: the topics are gone, as after any embedded restart
        await ensure_topics(settings, settings.topics.all)  # the runtime's topic keeper does this
        after_outage = asyncio.create_task(relay.run())
        try:
            received = await read_topic(broker.bootstrap_servers, settings.topics.leads, 1,
                                        timeout=30)
            assert {item["lead_id"] for item in received} == {"lead-outage"}
            assert await _eventually_zero(relay)
        finally:
            after_outage.cancel()
            await asyncio.gather(after_outage, return_exceptions=True)
    finally:
        await producer.stop()
        broker.stop()


async def _eventually_zero(relay: OutboxRelay) -> bool:
    for _ in range(100):
        if await relay.backlog() == 0:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("handed_over", [True, False], ids=["handed-over", "read"])
async def test_a_new_lead_goes_out_before_a_backlog_of_signals(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str,
    handed_over: bool,
) -> None:
    topics = settings_for(broker, topic_prefix).topics
    outbox = Outbox(TABLES, topic=topics.leads, shards=4)
    relay = None
    if handed_over:  # on SQLite, the commits hand the rows to the relay
        relay = OutboxRelay(database, outbox, producer, fast_topics=[topics.leads])
    signals = [event(f"lead-{number % 50}", number) for number in range(20_000)]
    for start in range(0, len(signals), 5_000):
        async with database.transaction() as session:
            await outbox.add(session, *signals[start:start + 5_000], topic=topics.signals)
    await write(database, outbox, [event("hot-lead", 1)])
    if relay is None:
        relay = OutboxRelay(database, outbox, producer, fast_topics=[topics.leads])
    await relay.prepare()

    await relay.relay_once()
    await relay.flush_marks()

    received = await read_topic(broker.bootstrap_servers, topics.leads, 1)
    assert [item["lead_id"] for item in received] == ["hot-lead"]
    assert await relay.backlog() >= 20_000 - relay.batch_size
    while await relay.relay_once():
        pass
    await relay.flush_marks()
    assert await relay.backlog() == 0
    assert relay.published == 20_001


def count_looks(relay: OutboxRelay) -> list[int]:
    """Count the relay's looks at its table from now on: the one item of the list returned."""
    looks = [0]
    relay_once = relay.relay_once

    async def counted() -> int:
        looks[0] += 1
        return await relay_once()

    relay.relay_once = counted  # type: ignore[method-assign]
    return looks


async def test_a_quiet_relay_looks_less_often_yet_finds_what_another_process_wrote(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """On SQLite a quiet relay backs off to IDLE_POLL_SECONDS between looks (its own
    process's commits wake it); on PostgreSQL it keeps `poll_seconds`."""
    topic = settings_for(broker, topic_prefix).topics.leads
    outbox = Outbox(TABLES, topic=topic, shards=4)
    relay = OutboxRelay(database, outbox, producer, poll_seconds=0.1)
    looks = count_looks(relay)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(3.0)
        sqlite = database.dialect == "sqlite"
        assert looks[0] <= 10 if sqlite else looks[0] >= 20, f"{looks[0]} looks in 3 s"
        elsewhere = Outbox(TABLES, topic=topic, shards=4)  # another process's: wakes nobody
        await write(database, elsewhere, [event("lead-elsewhere", 1)])
        received = await read_topic(broker.bootstrap_servers, topic, 1,
                                    timeout=IDLE_POLL_SECONDS + 1.5)
        assert [item["lead_id"] for item in received] == ["lead-elsewhere"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_relay_whose_outbox_another_process_writes_keeps_looking(
    database: Database, producer: AIOKafkaProducer, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """The scorer's `leads` process relays what its `signals` process writes: on SQLite too,
    its relay looks every `poll_seconds` instead of backing off."""
    topic = settings_for(broker, topic_prefix).topics.leads
    outbox = Outbox(TABLES, topic=topic, shards=4)
    relay = OutboxRelay(database, outbox, producer, poll_seconds=0.1, written_elsewhere=True)
    looks = count_looks(relay)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(3.0)
        assert looks[0] >= 20, f"{looks[0]} looks in 3 s"
        elsewhere = Outbox(TABLES, topic=topic, shards=4)
        await write(database, elsewhere, [event("lead-elsewhere", 1)])
        received = await read_topic(broker.bootstrap_servers, topic, 1, timeout=1.5)
        assert [item["lead_id"] for item in received] == ["lead-elsewhere"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
