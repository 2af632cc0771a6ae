"""A consumer's batches: at most `max_batch` records each, and an idle consumer lengthens its
fetch wait (then shortens it at the first record)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import encode_event
from shared.kafka import build_consumer, build_producer, ensure_topics
from shared.settings import ServiceSettings
from tests.shared.conftest import INBOX, erased
from tests.support import eventually

pytestmark = pytest.mark.broker

BACKLOG = 600
BATCH = 50


async def test_batches_are_capped_and_an_idle_consumer_waits_longer(
    database: Database, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                               kafka_topic_prefix=topic_prefix, kafka_fetch_max_wait_ms=10)
    topic = settings.topics.signals
    await ensure_topics(settings, [topic])
    producer = build_producer(settings)
    await producer.start()
    applied: list[str] = []

    async def apply(_session: AsyncSession, event: Any) -> None:
        applied.append(event.lead_id)

    kafka_consumer = build_consumer(settings, [topic], group_id=f"{topic_prefix}-batches")
    consumer = EventConsumer(
        name="sample", db=database, inbox=INBOX, consumer=kafka_consumer,
        handlers={"lead.erased": apply}, max_batch=BATCH,
        fetch_wait_ms=10, idle_fetch_wait_ms=300, idle_after=0.5,
    )
    batches: list[int] = []
    apply_batch = consumer.apply

    async def counted(records: Any) -> None:
        batches.append(sum(len(messages) for messages in records.values()))
        await apply_batch(records)

    consumer.apply = counted  # type: ignore[method-assign]
    sends = [await producer.send(topic, encode_event(erased(f"lead-{n}")),
                                 key=f"lead-{n}".encode()) for n in range(BACKLOG)]
    await asyncio.gather(*sends)
    running = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _true_when(len(applied) == BACKLOG), timeout=60)
        assert max(batches) == BATCH and sum(batches) == BACKLOG

        await eventually(lambda: _true_when(consumer.idle.idle), timeout=10)
        assert kafka_consumer._fetcher._fetch_max_wait_ms == 300
        await producer.send_and_wait(topic, encode_event(erased("late")), key=b"late")
        await eventually(lambda: _true_when("late" in applied), timeout=10)
        assert kafka_consumer._fetcher._fetch_max_wait_ms == 10
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await producer.stop()


async def _true_when(condition: bool) -> bool:
    return condition
