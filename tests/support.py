"""Helpers for tests: run a service app in-process, poll with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer
from cryptography.fernet import Fernet
from fastapi import FastAPI
from prometheus_client import Counter
from sqlalchemy import text

from shared.kafka import topic_partitions
from shared.sealing import key_bytes, open_document

T = TypeVar("T")
ADMIN_TOKEN = "test-admin-token-0123456789"
"""The admin token the services' test settings carry (`admin_token=ADMIN_TOKEN`)."""
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVE_SECRETS = {
    "LEADRELAY_ADMIN_TOKEN": ADMIN_TOKEN,
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
    bootstrap_servers: str, topic: str, count: int, *, timeout: float = 15.0, **security: Any
) -> list[dict[str, Any]]:
    """Read the first `count` events of `topic` (all partitions, no consumer group); `security`:
    aiokafka's TLS and SASL keyword arguments, if the broker wants them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                **security)
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: topic_partitions(bootstrap_servers, [topic], **security), timeout=timeout
        )
        consumer.assign(partitions)
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


def opened(documents: list[dict[str, Any]], keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Events as a consumer reads them: their sealed fields opened with the leads' data keys
    (`keys`: lead id -> stored key); one whose key is not given is left sealed."""

    def key_of(lead_id: str) -> bytes | None:
        stored = keys.get(lead_id)
        return key_bytes(stored) if stored else None

    return [open_document(document, key_of) or document for document in documents]


async def ingest_keys(database_url: str) -> dict[str, str]:
    """Every lead's data key in ingest's database."""
    from shared.db import Database

    db = Database(database_url)
    try:
        async with db.reading() as session:
            result = await session.execute(text("SELECT id, data_key FROM ingest_lead"))
            return {lead_id: key for lead_id, key in result if key}
    finally:
        await db.dispose()


def counted(counter: Counter) -> float:
    """What a Prometheus counter, or one labelled child of it, has counted so far."""
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total"))
