"""A consumer's lanes: the fast lane is never queued behind the bulk lane's backlog, and an idle
consumer lengthens its fetch wait (then shortens it at the first record)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import EmbeddedBroker
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import LeadErased, LeadErasedData, encode_event
from shared.kafka import build_consumer, build_producer, ensure_topics
from shared.settings import ServiceSettings
from tests.shared.conftest import INBOX
from tests.support import eventually

pytestmark = pytest.mark.broker

BULK = 3000
BULK_BATCH = 50


def erased(lead_id: str) -> LeadErased:
    return LeadErased(producer="test", lead_id=lead_id, data=LeadErasedData())


async def test_the_fast_lane_overtakes_a_bulk_backlog_and_an_idle_consumer_waits_longer(
    database: Database, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                               kafka_topic_prefix=topic_prefix, kafka_fetch_max_wait_ms=10)
    fast, bulk = settings.topics.leads, settings.topics.signals
    await ensure_topics(settings, [fast, bulk])
    producer = build_producer(settings)
    await producer.start()
    applied: list[str] = []

    async def apply(_session: AsyncSession, event: Any) -> None:
        applied.append(event.lead_id)
        if event.lead_id.startswith("bulk"):
            time.sleep(0.0005)  # applying a signal takes time: the backlog lasts

    kafka_consumer = build_consumer(settings, [fast, bulk], group_id=f"{topic_prefix}-lanes")
    consumer = EventConsumer(
        name="sample", db=database, inbox=INBOX, consumer=kafka_consumer,
        handlers={"lead.erased": apply}, bulk_topics=[bulk], bulk_batch=BULK_BATCH,
        fetch_wait_ms=10, idle_fetch_wait_ms=300, idle_after=0.5,
    )
    running = asyncio.create_task(consumer.run())
    try:
        sends = [await producer.send(bulk, encode_event(erased(f"bulk-{n}")),
                                     key=f"bulk-{n}".encode()) for n in range(BULK)]
        await asyncio.gather(*sends)
        await eventually(lambda: _true_when(len(applied) > 0), timeout=30)
        await producer.send_and_wait(fast, encode_event(erased("fast-0")), key=b"fast-0")
        sent_at = len(applied)
        await eventually(lambda: _true_when("fast-0" in applied), timeout=30)
        overtaken = applied.index("fast-0") - sent_at
        assert overtaken < 4 * BULK_BATCH, f"{overtaken} bulk events applied before it"
        assert len(applied) < BULK, "the bulk backlog was still there"

        await eventually(lambda: _true_when(len(applied) == BULK + 1), timeout=60)
        await eventually(lambda: _true_when(consumer.idle.idle), timeout=10)
        assert kafka_consumer._fetcher._fetch_max_wait_ms == 300
        await producer.send_and_wait(fast, encode_event(erased("fast-1")), key=b"fast-1")
        await eventually(lambda: _true_when("fast-1" in applied), timeout=10)
        assert kafka_consumer._fetcher._fetch_max_wait_ms == 10
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await producer.stop()


async def _true_when(condition: bool) -> bool:
    return condition
