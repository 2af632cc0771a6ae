"""Crash test: kill -9 the scorer and the router while 500 leads flow; nothing lost or doubled.

On both set-ups (`tests/e2e/conftest.py`): the embedded broker with SQLite, and Apache Kafka
with PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from shared.db import Database
from tests.e2e.conftest import Platform
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

LEADS = 500


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def system(
    platform: Platform, tmp_path: Path, receiver: WebhookReceiver
) -> Iterator[RunningSystem]:
    with running_system(
        bootstrap_servers=platform.bootstrap_servers, data_dir=tmp_path,
        topic_prefix=platform.topic_prefix("crash"), sla_seconds=3600,
        database_url=platform.database_url, broker_env=platform.service_env,
        allowed_webhook_urls=[receiver.base_url],
    ) as running:
        yield running


async def send_leads(client: httpx.AsyncClient, ingest: str, sent: list[str]) -> None:
    semaphore = asyncio.Semaphore(8)

    async def one(number: int) -> None:
        async with semaphore:
            answer = await client.post(f"{ingest}/v1/leads", json={
                "email": f"crash{number}@load.example", "demo_requested": True,
            })
            assert answer.status_code == 202, answer.text
            sent.append(answer.json()["lead_id"])

    await asyncio.gather(*(one(number) for number in range(LEADS)))


async def test_killing_scorer_and_router_loses_nothing_and_doubles_nothing(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    sent: list[str] = []
    async with httpx.AsyncClient(timeout=30, headers=system.admin_headers) as client:
        for number in range(3):
            answer = await client.post(
                f"{system.url('router')}/v1/sdrs", headers=system.admin_headers, json={
                "name": f"Rep {number}", "email": f"rep{number}@team.example",
                "webhook_url": receiver.new_endpoint(),
            })
            assert answer.status_code == 201
        sending = asyncio.create_task(send_leads(client, system.url("ingest"), sent))
        await eventually(lambda: asyncio.sleep(0, len(sent)), until=lambda n: n >= 150)
        system.services["scorer"].kill()
        await asyncio.to_thread(system.restart, "scorer")
        await eventually(lambda: asyncio.sleep(0, len(sent)), until=lambda n: n >= 300)
        system.services["router"].kill()
        await asyncio.to_thread(system.restart, "router")
        await sending

    router_db = Database(system.database_urls["router"])
    try:
        async def assigned_leads() -> int:
            async with router_db.reading() as session:
                count = await session.scalar(
                    text("SELECT count(DISTINCT lead_id) FROM router_assignment")
                )
            return int(count or 0)

        await eventually(assigned_leads, until=lambda n: n >= LEADS, timeout=120)
        async with router_db.reading() as session:
            rows = (await session.execute(text(
                "SELECT lead_id, count(*) AS total, "
                "sum(CASE WHEN status IN ('offered', 'accepted') THEN 1 ELSE 0 END) AS active "
                "FROM router_assignment GROUP BY lead_id"
            ))).all()
    finally:
        await router_db.dispose()
    per_lead = {row.lead_id: (row.total, row.active) for row in rows}
    assert set(per_lead) == set(sent)
    assert len(sent) == LEADS
    doubled = {lead: counts for lead, counts in per_lead.items() if counts != (1, 1)}
    assert not doubled, f"leads without exactly one active assignment: {doubled}"
    notified = await eventually(
        lambda: asyncio.sleep(0, {body["lead_id"] for _, body in receiver.received}),
        until=lambda got: got >= set(sent), timeout=60,
    )
    assert notified == set(sent)

