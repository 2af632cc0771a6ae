"""A consumer's slow topics: fetched only in short visits, with nothing skipped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import encode_event
from shared.kafka import build_consumer, build_producer, ensure_topics
from shared.settings import ServiceSettings
from shared.slow_topics import SlowTopics
from tests.shared.conftest import INBOX, erased

pytestmark = pytest.mark.broker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Partitions:
    """The part of a Kafka consumer `SlowTopics` drives, keeping the paused set."""

    def __init__(self, *partitions: TopicPartition) -> None:
        self.assigned = set(partitions)
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)


def test_slow_partitions_are_resumed_for_a_window_on_each_visit_and_paused_between() -> None:
    slow, hot = TopicPartition("slow", 0), TopicPartition("hot", 0)
    consumer, clock = Partitions(slow, hot), Clock()
    pacer = SlowTopics(consumer, ["slow"], interval=0.25, window=0.03, clock=clock)  # type: ignore[arg-type]

    assert pacer.pace() == pytest.approx(0.03)
    assert consumer.paused == set(), "a visit opens at once"
    clock.now = 0.02
    assert pacer.pace() == pytest.approx(0.01)
    assert consumer.paused == set()
    clock.now = 0.03
    assert pacer.pace() == pytest.approx(0.22)
    assert consumer.paused == {slow}
    late = TopicPartition("slow", 1)
    consumer.assigned.add(late)  # a rebalance hands over another partition, unpaused
    clock.now = 0.1
    assert pacer.pace() == pytest.approx(0.15)
    assert consumer.paused == {slow, late}
    clock.now = 0.25
    assert pacer.pace() == pytest.approx(0.03)
    assert consumer.paused == set()
    assert pacer.visits == 2


async def test_a_consumer_reads_its_slow_topic_in_visits_and_misses_nothing(
    database: Database, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                               kafka_topic_prefix=topic_prefix, kafka_fetch_max_wait_ms=10)
    hot, slow = settings.topics.leads, settings.topics.assignments
    await ensure_topics(settings, [hot, slow])
    producer = build_producer(settings)
    await producer.start()
    try:
        for number in range(20):
            for topic in (hot, slow):
                lead_id = f"{topic}-{number}"
                await producer.send(topic, encode_event(erased(lead_id)), key=lead_id.encode())
        await producer.flush()
    finally:
        await producer.stop()

    applied: list[str] = []

    async def apply(_session: AsyncSession, event: Any) -> None:
        applied.append(event.lead_id)

    kafka_consumer = build_consumer(settings, [hot, slow], group_id=f"{topic_prefix}-slow")
    consumer = EventConsumer(
        name="sample", db=database, inbox=INBOX, consumer=kafka_consumer,
        handlers={"lead.erased": apply},
        slow_topics=[slow], slow_interval=0.3, slow_window=0.05,
    )
    running = asyncio.create_task(consumer.run())
    try:
        for _ in range(400):
            if len(applied) == 40:
                break
            await asyncio.sleep(0.05)
        assert sorted(applied) == sorted(f"{topic}-{n}" for n in range(20) for topic in (hot, slow))

        samples, slow_paused, hot_paused = 0, 0, 0
        for _ in range(120):
            paused = kafka_consumer.paused()
            samples += 1
            slow_paused += any(tp.topic == slow for tp in paused)
            hot_paused += any(tp.topic == hot for tp in paused)
            await asyncio.sleep(0.01)
        assert hot_paused == 0
        assert slow_paused / samples > 0.6, "the slow topic was fetched most of the time"
        assert consumer.slow_topics.visits >= 3
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
