"""Helpers for tests: run a service app in-process, poll with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.fernet import Fernet
from fastapi import FastAPI
from prometheus_client import Counter

T = TypeVar("T")
ADMIN_TOKEN = "test-admin-token-0123456789"
"""The admin token the services' test settings carry (`admin_token=ADMIN_TOKEN`)."""
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVE_SECRETS = {
    "LEADRELAY_ADMIN_TOKEN": ADMIN_TOKEN,
    "LEADRELAY_ACTION_SECRET": "test-action-secret-0123456789",
    "LEADRELAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}
"""What `leadrelay serve` refuses to start without (the router also wants its public URL)."""


@asynccontextmanager
async def running_app(
    app: FastAPI, *, headers: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan (runtime, relay, consumer, loops) and give an HTTP client to it,
    sending `headers` (`ADMIN_HEADERS`: as the admin) with every request."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers=headers) as client:
            yield client


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 15.0,
    interval: float = 0.05,
) -> T:
    """Call `probe` until `until(result)` holds; fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
        await asyncio.sleep(interval)


async def read_topic(
    bootstrap_servers: str, topic: str, count: int, *, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Read the first `count` events of `topic` (all partitions, no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: _partitions(consumer, topic), timeout=timeout
        )
        consumer.assign([TopicPartition(topic, partition) for partition in partitions])
        await consumer.seek_to_beginning()
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(events) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                events.extend(json.loads(message.value) for message in messages)
    finally:
        await consumer.stop()
    assert len(events) >= count, f"only {len(events)} of {count} events on {topic}"
    events.sort(key=lambda event: event["occurred_at"])
    return events


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()
    return consumer.partitions_for_topic(topic) or set()


def counted(counter: Counter) -> float:
    """What a Prometheus counter, or one labelled child of it, has counted so far."""
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total"))
