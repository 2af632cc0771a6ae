"""Broker crash test: kill -9 the embedded broker twice while leads flow; none lost or doubled.

The embedded broker keeps everything in memory, so each restart loses the records the
consumers had not read yet and the offsets they had committed. The outboxes publish again
what the consumers may have missed; every lead ingest answered 202 must still be scored,
assigned once and offered to an SDR.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from shared.db import Database
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

LEADS = 1_200
RATE = 40.0
"""Leads a second: modest, the machine is shared; the broker still holds a backlog."""


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it is killed and restarted."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def system(
    own_broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    receiver: WebhookReceiver,
) -> Iterator[RunningSystem]:
    # An idle service also looks at the broker every second, not every ten.
    monkeypatch.setenv("LEADRELAY_KAFKA_TOPIC_CHECK_SECONDS", "1")
    with running_system(
        bootstrap_servers=own_broker.bootstrap_servers, data_dir=tmp_path,
        topic_prefix="restart", sla_seconds=3600, allowed_webhook_urls=[receiver.base_url],
    ) as running:
        yield running


async def send_leads(client: httpx.AsyncClient, ingest: str, accepted: list[str]) -> None:
    """POST `LEADS` leads at `RATE` a second; a lead counts once ingest answered 202."""
    started = time.monotonic()

    async def one(number: int) -> None:
        await asyncio.sleep(max(0.0, started + number / RATE - time.monotonic()))
        answer = await client.post(f"{ingest}/v1/leads", json={
            "email": f"restart{number}@load.example", "demo_requested": True,
        })
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["lead_id"])

    await asyncio.gather(*(one(number) for number in range(LEADS)))


async def restart_broker(broker: EmbeddedBroker, system: RunningSystem) -> float:
    """Kill -9 and restart the broker; seconds from its port answering again until every
    service adopted the new epoch, as seen in `/metrics`."""
    before = await asyncio.to_thread(system.adopted_broker_epochs)
    await asyncio.to_thread(broker.restart)
    restarted_at = time.monotonic()
    await eventually(
        lambda: asyncio.to_thread(system.adopted_broker_epochs),
        until=lambda now: all(now[name] > before[name] for name in before),
        timeout=60, interval=0.1,
    )
    return time.monotonic() - restarted_at


async def test_killing_the_broker_twice_loses_no_acknowledged_lead(
    own_broker: EmbeddedBroker, system: RunningSystem, receiver: WebhookReceiver
) -> None:
    accepted: list[str] = []
    recoveries: list[float] = []

    async def accepted_count() -> int:
        return len(accepted)

    async with httpx.AsyncClient(timeout=30, headers=system.admin_headers) as client:
        for number in range(3):
            answer = await client.post(
                f"{system.url('router')}/v1/sdrs", headers=system.admin_headers, json={
                    "name": f"Rep {number}", "email": f"rep{number}@team.example",
                    "webhook_url": receiver.new_endpoint(),
                })
            assert answer.status_code == 201
        sending = asyncio.create_task(send_leads(client, system.url("ingest"), accepted))
        for accepted_before_restart in (LEADS // 3, LEADS * 2 // 3):
            await eventually(accepted_count, until=accepted_before_restart.__le__, timeout=60)
            recoveries.append(await restart_broker(own_broker, system))
        await sending

    router_db = Database(system.database_urls["router"])
    try:
        async def assigned_leads() -> set[str]:
            async with router_db.reading() as session:
                found = (await session.scalars(
                    text("SELECT DISTINCT lead_id FROM router_assignment"))).all()
            return set(found)

        assigned = await eventually(
            assigned_leads, until=lambda got: got >= set(accepted), timeout=60, interval=0.5)
        async with router_db.reading() as session:
            rows = (await session.execute(text(
                "SELECT lead_id, count(*) AS total, "
                "sum(CASE WHEN status IN ('offered', 'accepted') THEN 1 ELSE 0 END) AS active "
                "FROM router_assignment GROUP BY lead_id"
            ))).all()
    except AssertionError:
        lost = set(accepted) - await assigned_leads()
        raise AssertionError(
            f"{len(lost)} of {len(accepted)} acknowledged leads never assigned "
            f"(recovery took {recoveries} s)") from None
    finally:
        await router_db.dispose()
    print(f"recovery after each broker restart: {[round(s, 2) for s in recoveries]} s")
    assert len(accepted) == LEADS
    assert assigned == set(accepted)
    doubled = {row.lead_id: (row.total, row.active) for row in rows if row.active != 1}
    assert not doubled, f"leads without exactly one active assignment: {doubled}"
    notified = await eventually(
        lambda: asyncio.sleep(0, {body["lead_id"] for _, body in receiver.received}),
        until=lambda got: got >= set(accepted), timeout=60,
    )
    assert notified >= set(accepted)
