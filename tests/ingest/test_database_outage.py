"""Ingest while its database is down. Under load while PostgreSQL crashes and restarts, then
stops for a few seconds: every answer is a 202 or a 503 with Retry-After, never a 500; every
lead answered 202 is stored and published; /readyz says not ready while the database is down;
no loop logs a traceback. With an SQLite file that cannot be opened: every route a 503 until
the file is back, then 202s that are published."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from leadrelay.broker import EmbeddedBroker
from leadrelay.harness.postgres import PostgresCluster
from services.ingest.app import create_app
from services.ingest.models import lead
from services.ingest.settings import IngestSettings
from shared.db import Database
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, running_app

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@dataclass
class Answer:
    kind: str
    answered_at: float
    status: int
    """The HTTP status; 0 when the client got an exception instead of an answer."""
    retry_after: str | None
    lead_ids: list[str]


@dataclass
class Load:
    """Workers posting leads without pause, each kind of post in turn: a lead alone (the lean
    handler and the group commit), with an Idempotency-Key, and a batch of two."""

    client: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    sent: int = 0

    async def work(self, worker: int) -> None:
        while True:
            # An answer given without any I/O (a refusal) never suspends the worker: yield, or
            # the test's own deadline would never get a turn.
            await asyncio.sleep(0)
            self.sent += 1
            number = self.sent
            kind, post = [self._lead, self._keyed_lead, self._batch][number % 3](
                f"w{worker}-{number}")
            try:
                response = await post()
            except Exception as error:  # noqa: BLE001 - recorded, and the test fails on it
                self.answers.append(Answer(f"{kind}: {error!r}", time.monotonic(), 0, None, []))
                continue
            body = response.json()
            ids = ([item["lead_id"] for item in body["results"]] if "results" in body
                   else [body["lead_id"]] if "lead_id" in body else [])
            self.answers.append(Answer(kind, time.monotonic(), response.status_code,
                                       response.headers.get("retry-after"), ids))

    def _lead(self, name: str) -> tuple[str, Callable[[], Awaitable[httpx.Response]]]:
        return "lead", lambda: self.client.post("/v1/leads", json={"email": f"{name}@load.io"})

    def _keyed_lead(self, name: str) -> tuple[str, Callable[[], Awaitable[httpx.Response]]]:
        return "keyed lead", lambda: self.client.post(
            "/v1/leads", json={"email": f"{name}@load.io"}, headers={"Idempotency-Key": name})

    def _batch(self, name: str) -> tuple[str, Callable[[], Awaitable[httpx.Response]]]:
        return "batch", lambda: self.client.post("/v1/leads/batch", json={"leads": [
            {"email": f"{name}-a@load.io"}, {"email": f"{name}-b@load.io"}]})

    def accepted_since(self, moment: float) -> int:
        return sum(1 for answer in self.answers
                   if answer.status == 202 and answer.answered_at > moment)


@dataclass
class Disruption:
    name: str
    began_at: float
    ended_at: float = 0.0


def unavailable_window(answers: list[Answer], disruption: Disruption, until: float) -> str:
    """When the 503s of a disruption came (until the next one), relative to when it began
    and ended."""
    refused = [answer.answered_at for answer in answers
               if answer.status == 503 and disruption.began_at <= answer.answered_at < until]
    back = [answer.answered_at for answer in answers
            if answer.status == 202 and answer.answered_at > disruption.ended_at]
    first_202 = min(back) - disruption.began_at if back else float("nan")
    if not refused:
        return f"{disruption.name}: no 503; first 202 after it {first_202:.2f} s from its start"
    return (f"{disruption.name}: 503s from +{min(refused) - disruption.began_at:.2f} s to "
            f"+{max(refused) - disruption.began_at:.2f} s (database back at "
            f"+{disruption.ended_at - disruption.began_at:.2f} s), first 202 after it at "
            f"+{first_202:.2f} s")


async def published_lead_ids(
    settings: IngestSettings, wanted: set[str], *, timeout: float = 60.0,
) -> set[str]:
    """The lead ids of `lead.received` events on the leads topic, read until `wanted` are all
    there or `timeout` passed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    seen: set[str] = set()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(settings.topics.leads) or set()
        consumer.assign([TopicPartition(settings.topics.leads, partition)
                         for partition in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                seen.update(json.loads(message.value)["lead_id"] for message in messages)
    finally:
        await consumer.stop()
    return seen


async def stored_lead_ids(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.reading() as session:
            return set((await session.scalars(select(lead.c.id))).all())
    finally:
        await db.dispose()


@pytest.fixture
def ingest_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database("ingest")
    migrate("ingest", url)
    return url


async def test_ingest_answers_202_or_503_while_postgresql_restarts(
    postgres_cluster: PostgresCluster, ingest_url: str, broker: EmbeddedBroker,
    topic_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = ingest_url
    settings = IngestSettings(database_url=url, kafka_bootstrap_servers=broker.bootstrap_servers,
                              kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN)
    disruptions: list[Disruption] = []
    readiness_while_down: list[int] = []
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        load = Load(client)
        workers = [asyncio.create_task(load.work(worker)) for worker in range(6)]
        try:
            await eventually(lambda: asyncio.sleep(0, load.accepted_since(0)),
                             until=lambda accepted: accepted >= 30, timeout=30)

            crash = Disruption("restart -m immediate", time.monotonic())
            disruptions.append(crash)
            await asyncio.to_thread(postgres_cluster.restart, "immediate")
            crash.ended_at = time.monotonic()
            await eventually(lambda: asyncio.sleep(0, load.accepted_since(crash.ended_at)),
                             until=lambda accepted: accepted >= 30, timeout=60)

            stop = Disruption("stopped for 3 s", time.monotonic())
            disruptions.append(stop)
            await asyncio.to_thread(postgres_cluster.stop, "fast")
            readiness_while_down.append((await client.get("/readyz")).status_code)
            await asyncio.sleep(3.0)
            await asyncio.to_thread(postgres_cluster.start)
            stop.ended_at = time.monotonic()
            await eventually(lambda: asyncio.sleep(0, load.accepted_since(stop.ended_at)),
                             until=lambda accepted: accepted >= 30, timeout=60)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        ready = await eventually(lambda: client.get("/readyz"),
                                 until=lambda answer: answer.status_code == 200, timeout=30)
        assert ready.json()["checks"]["database"] is True
        accepted = {lead_id for answer in load.answers if answer.status == 202
                    for lead_id in answer.lead_ids}
        published = await published_lead_ids(settings, accepted)

    statuses = Counter(answer.status for answer in load.answers)
    by_kind = Counter((answer.kind, answer.status) for answer in load.answers)
    print(f"\n{len(load.answers)} answers: {dict(statuses)}; {dict(by_kind)}")
    for disruption, until in zip(disruptions, [*[later.began_at for later in disruptions[1:]],
                                               float("inf")], strict=True):
        print(unavailable_window(load.answers, disruption, until))
    assert set(statuses) <= {202, 503}, [
        (answer.kind, answer.status) for answer in load.answers if answer.status not in {202, 503}]
    assert statuses[503] > 0, "the restarts went unnoticed: the test proves nothing"
    assert all(answer.retry_after for answer in load.answers if answer.status == 503)
    assert readiness_while_down == [503]

    assert not accepted - await stored_lead_ids(url), "leads answered 202 but not stored"
    assert not accepted - published, "leads answered 202 but never published"
    loud = [record.getMessage() for record in caplog.records
            if record.exc_info or "stopped unexpectedly" in record.getMessage()]
    assert not loud, loud


@pytest.fixture
def migrated_elsewhere(tmp_path: Path) -> Path:
    """An SQLite file with ingest's tables, away from where ingest looks for it."""
    migrated = tmp_path / "migrated" / "ingest.db"
    migrated.parent.mkdir()
    migrate("ingest", f"sqlite+aiosqlite:///{migrated}")
    return migrated


async def test_ingest_answers_503_while_its_sqlite_file_cannot_be_opened(
    tmp_path: Path, migrated_elsewhere: Path, broker: EmbeddedBroker, topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The file's path leads to a directory (a volume not mounted yet, say): SQLite cannot
    open it. Then the file comes back, and ingest works without a restart."""
    caplog.set_level(logging.INFO)
    path = tmp_path / "ingest.db"
    migrated = migrated_elsewhere
    path.mkdir()
    settings = IngestSettings(
        database_url=f"sqlite+aiosqlite:///{path}", kafka_topic_prefix=topic_prefix,
        kafka_bootstrap_servers=broker.bootstrap_servers, admin_token=ADMIN_TOKEN)
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        refused = [
            await client.post("/v1/leads", json={"email": "gone@acme.io"}),
            await client.post("/v1/leads", json={"email": "gone@acme.io"},
                              headers={"Idempotency-Key": "gone"}),
            await client.post("/v1/leads/batch", json={"leads": [{"email": "gone@acme.io"}]}),
            await client.post("/v1/signals", json={"email": "gone@acme.io",
                                                   "type": "email_open"}),
            await client.get("/v1/leads/some-lead"),
            await client.get("/readyz"),
        ]
        path.rmdir()
        shutil.move(migrated, path)
        back = await eventually(
            lambda: client.post("/v1/leads", json={"email": "back@acme.io"}),
            until=lambda answer: answer.status_code == 202, timeout=30)
        published = await published_lead_ids(settings, {back.json()["lead_id"]})
        await eventually(lambda: client.get("/readyz"),
                         until=lambda answer: answer.status_code == 200, timeout=30)

    assert [answer.status_code for answer in refused] == [503] * len(refused), [
        answer.text for answer in refused]
    assert all(answer.headers["retry-after"] for answer in refused[:-1])
    assert refused[-1].json()["checks"]["database"] is False
    assert back.json()["lead_id"] in published
    loud = [record.getMessage() for record in caplog.records
            if record.exc_info or "stopped unexpectedly" in record.getMessage()]
    assert not loud, loud
