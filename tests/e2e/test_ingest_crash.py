"""Crash test of ingest: 2,000 submissions from concurrent clients that retry with the same
Idempotency-Key until acknowledged, while the ingest process is killed -9 twice and restarted.

Every acknowledged submission is stored exactly once: one lead per email, one submission and
one idempotency key per submission, one `lead.received` per lead in the outbox and on the
broker (a redelivery after a crash carries the same event id). On both set-ups
(`tests/e2e/conftest.py`): the embedded broker with SQLite, Apache Kafka with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from leadrelay.broker import free_port
from leadrelay.processes import ServiceProcess, wait_until_ready
from services.ingest.models import OUTBOX, idempotency_key, lead, submission
from shared.db import Database
from tests.conftest import migrate
from tests.e2e.conftest import Platform
from tests.support import ADMIN_HEADERS, SERVE_SECRETS, eventually, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

SUBMISSIONS = 2000
CLIENTS = 16
KILL_AFTER = (500, 1200)
"""Acknowledged submissions after which ingest is killed -9 (and restarted)."""


@pytest.fixture
def ingest(
    platform: Platform, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str, str]]:
    """ingest as a real process, on an SQLite file or a throwaway PostgreSQL database."""
    database_url = platform.database_url or f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    migrate("ingest", database_url)
    topic_prefix = platform.topic_prefix("icrash")
    process = ServiceProcess("ingest", free_port(), {
        "LEADRELAY_DATA_DIR": str(tmp_path),
        "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": platform.bootstrap_servers,
        "LEADRELAY_KAFKA_TOPIC_PREFIX": topic_prefix,
        "LEADRELAY_INGEST_DATABASE_URL": database_url,
        "LEADRELAY_LOG_LEVEL": "WARNING",
        **platform.service_env,
        **SERVE_SECRETS,
    }, tmp_path / "logs" / "ingest.log")
    process.start()
    try:
        wait_until_ready([process])
        yield process, database_url, f"{topic_prefix}.leads"
    finally:
        process.stop()


class Clients:
    """Concurrent senders; each submission is retried with its key until it gets a `202`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: dict[str, str] = {}
        """Email -> lead id, from the `202` answers."""
        self.retries = 0
        self.replays_checked = 0

    async def send_all(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(SUBMISSIONS):
            queue.put_nowait(number)
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0,
                                     headers=ADMIN_HEADERS) as client:
            await asyncio.gather(*(self._client(client, queue) for _ in range(CLIENTS)))

    async def _client(self, client: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        while not queue.empty():
            number = queue.get_nowait()
            email = f"crash{number}@load.example"
            body = {"email": email, "name": f"Lead {number}", "demo_requested": number % 2 == 0}
            key = f"crash-{number}"
            answer = await self._until_acknowledged(client, body, key)
            self.acknowledged[email] = answer["lead_id"]
            if number % 10 == 0:
                # A client that never saw its answer sends again: the first answer comes back.
                again = await self._until_acknowledged(client, body, key)
                assert again == answer
                self.replays_checked += 1

    async def _until_acknowledged(
        self, client: httpx.AsyncClient, body: dict[str, object], key: str
    ) -> dict[str, str]:
        while True:
            try:
                answer = await client.post("/v1/leads", json=body,
                                           headers={"Idempotency-Key": key})
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 202:
                document: dict[str, str] = answer.json()
                assert document["status"] == "created", document
                return document
            if answer is not None and answer.status_code not in (409, 503):
                raise AssertionError(f"unexpected answer {answer.status_code}: {answer.text}")
            self.retries += 1
            await asyncio.sleep(random.uniform(0.02, 0.2))


async def test_killing_ingest_twice_stores_every_acknowledged_submission_once(
    ingest: tuple[ServiceProcess, str, str], platform: Platform
) -> None:
    process, database_url, topic = ingest
    clients = Clients(process.url)
    sending = asyncio.create_task(clients.send_all())
    for threshold in KILL_AFTER:
        await eventually(lambda: asyncio.sleep(0, len(clients.acknowledged)),
                         until=lambda count, at=threshold: count >= at or sending.done(),
                         timeout=60)
        assert not sending.done(), "all sent before the kill: nothing was tested"
        process.kill()
        await asyncio.sleep(0.3)  # clients keep retrying against a dead port
        process.start()
        await asyncio.to_thread(wait_until_ready, [process])
    await sending

    assert len(clients.acknowledged) == SUBMISSIONS
    assert clients.retries > 0
    db = Database(database_url)
    try:
        async with db.reading() as session:
            leads = {row.email: row.id for row in (await session.execute(
                select(lead.c.email, lead.c.id))).all()}
            per_lead = dict((await session.execute(
                select(submission.c.lead_id, func.count()).group_by(submission.c.lead_id)
            )).all())
            keys = (await session.execute(select(idempotency_key.c.key))).scalars().all()
            events = (await session.execute(select(
                OUTBOX.events.c.message_key, OUTBOX.events.c.event_type))).all()
    finally:
        await db.dispose()
    assert leads == clients.acknowledged
    assert set(per_lead) == set(leads.values())
    assert set(per_lead.values()) == {1}, "a lead with more than one submission"
    assert sorted(keys) == sorted(f"crash-{number}" for number in range(SUBMISSIONS))
    received: dict[str, int] = defaultdict(int)
    for message_key, event_type in events:
        assert event_type == "lead.received"
        received[message_key] += 1
    assert received == dict.fromkeys(leads.values(), 1)

    published: dict[str, set[str]] = defaultdict(set)
    wanted = SUBMISSIONS
    while len(published) < SUBMISSIONS:
        for event in await read_topic(platform.bootstrap_servers, topic, wanted, timeout=30,
                                      **platform.client_security):
            published[event["lead_id"]].add(event["event_id"])
        wanted += SUBMISSIONS - len(published)
    assert set(published) == set(leads.values())
    assert {len(ids) for ids in published.values()} == {1}
