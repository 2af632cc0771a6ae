"""The consumer loop's guarantees, driven with real ConsumerRecords against a real database."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy import Column, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import Envelope, encode_event
from tests.shared.conftest import INBOX, METADATA, erased

EFFECT = Table("sample_effect", METADATA, Column("lead_id", String(36), primary_key=True))
PARTITION = TopicPartition("sample.leads", 0)


async def record_effect(session: AsyncSession, event: Any) -> None:
    if event.lead_id.startswith("poison"):
        raise ValueError("this handler cannot apply poison")
    await session.execute(insert(EFFECT).values(lead_id=event.lead_id))


def consumer_for(database: Database) -> EventConsumer:
    return EventConsumer(
        name="sample", db=database, inbox=INBOX, consumer=None,  # type: ignore[arg-type]
        handlers={"lead.erased": record_effect},
    )


def records(*values: Envelope | bytes) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    batch = [
        ConsumerRecord(
            topic=PARTITION.topic, partition=0, offset=offset, timestamp=0, timestamp_type=0,
            key=b"k", value=value if isinstance(value, bytes) else encode_event(value),
            checksum=None, serialized_key_size=1, serialized_value_size=1, headers=(),
        )
        for offset, value in enumerate(values)
    ]
    return {PARTITION: batch}


async def effects(database: Database) -> list[str]:
    async with database.reading() as session:
        return list(await session.scalars(select(EFFECT.c.lead_id).order_by(EFFECT.c.lead_id)))


async def dead_letters(database: Database) -> int:
    async with database.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(INBOX.failed)) or 0)


async def test_redelivered_events_have_one_effect(database: Database) -> None:
    consumer = consumer_for(database)
    first, second = erased("lead-a"), erased("lead-b")
    await consumer.apply(records(first, second, first))
    await consumer.apply(records(second, first))
    assert await effects(database) == ["lead-a", "lead-b"]
    assert (consumer.applied, consumer.duplicates) == (2, 3)


async def test_a_failing_handler_is_dead_lettered_and_the_rest_applies(database: Database) -> None:
    consumer = consumer_for(database)
    poison = erased("poison-1")
    await consumer.apply(records(erased("lead-a"), poison, erased("lead-b")))
    assert await effects(database) == ["lead-a", "lead-b"]
    assert await dead_letters(database) == 1
    assert (consumer.applied, consumer.dead_lettered) == (2, 1)
    await consumer.apply(records(poison))
    assert await dead_letters(database) == 1, "a dead-lettered event was applied again"


async def test_unknown_and_broken_messages_never_block_the_batch(database: Database) -> None:
    consumer = consumer_for(database)
    unknown = b'{"type": "lead.teleported", "lead_id": "x"}'
    await consumer.apply(records(unknown, b"{not json", erased("lead-c")))
    assert await effects(database) == ["lead-c"]
    assert await dead_letters(database) == 1


async def test_a_broken_message_of_a_type_nobody_here_handles_is_skipped_not_dead_lettered(
    database: Database,
) -> None:
    consumer = consumer_for(database)
    broken_elsewhere = b'{"type": "lead.received", "lead_id": "x"}'
    await consumer.apply(records(broken_elsewhere, erased("lead-d")))
    assert await effects(database) == ["lead-d"]
    assert (consumer.applied, consumer.dead_lettered) == (1, 0)
    assert await dead_letters(database) == 0


class CommitLog:
    """The part of a Kafka consumer the offset commits use, recording each commit."""

    def __init__(self) -> None:
        self.commits: list[tuple[float, dict[TopicPartition, int]]] = []

    def assignment(self) -> set[TopicPartition]:
        return {PARTITION}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((asyncio.get_running_loop().time(), dict(offsets)))


async def test_offsets_are_committed_at_most_once_per_interval_the_latest_last(
    database: Database,
) -> None:
    log = CommitLog()
    consumer = EventConsumer(
        name="sample", db=database, inbox=INBOX, consumer=log,  # type: ignore[arg-type]
        handlers={}, commit_interval=0.1,
    )
    for offset in range(10):
        consumer._commit_offsets_later(records(*[erased(f"lead-{n}") for n in range(offset + 1)]))
        await asyncio.sleep(0.02)
    assert consumer._committing is not None
    await consumer._committing

    moments = [moment for moment, _ in log.commits]
    assert 2 <= len(moments) <= 4
    assert all(later - earlier >= 0.099 for earlier, later in itertools.pairwise(moments))
    assert log.commits[-1][1] == {PARTITION: 10}


class RebalancingConsumer:
    """Stands in for aiokafka's group membership: records seeks, hands over the listener."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.listener: Any = None

    def subscription(self) -> set[str]:
        return {"sample.leads"}

    def unsubscribe(self) -> None:
        self.listener = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


async def test_only_the_first_assignment_after_a_new_broker_starts_at_offset_zero(
    database: Database,
) -> None:
    group = RebalancingConsumer()
    consumer = consumer_for(database)
    consumer.consumer = group  # type: ignore[assignment]
    consumer.start_over()
    await consumer._read_again_from_beginning()
    first = [TopicPartition("sample.leads", 0), TopicPartition("sample.leads", 1)]
    await group.listener.on_partitions_assigned(first)
    assert group.seeks == [(partition, 0) for partition in first]
    # Later rebalances (another instance leaving, weeks on) keep the group's offsets.
    await group.listener.on_partitions_assigned([TopicPartition("sample.leads", 2)])
    assert group.seeks == [(partition, 0) for partition in first]
