"""What must hold across processes: two router instances on the same topics and database never
assign a lead twice, and timers pending when the router is killed -9 all fire after restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.processes import ServiceProcess, wait_until_ready
from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.db import Database
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, Router, scored
from tests.router.receiver import ALLOWED_WEBHOOKS
from tests.support import SERVE_SECRETS, eventually, running_app

pytestmark = pytest.mark.broker


async def produce_leads(bootstrap: str, topic: str, lead_ids: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        clock = ManualClock()
        sent = [
            await producer.send(topic, key=lead_id.encode(),
                                value=encode_event(scored(lead_id, clock=clock)))
            for lead_id in lead_ids
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def per_lead(db: Database) -> dict[str, tuple[int, int]]:
    async with db.reading() as session:
        rows = (await session.execute(text(
            "SELECT lead_id, count(*) AS total, "
            "sum(CASE WHEN status IN ('offered', 'accepted', 'contacted') THEN 1 ELSE 0 END) "
            "AS active FROM router_assignment GROUP BY lead_id"
        ))).all()
    return {row.lead_id: (int(row.total), int(row.active)) for row in rows}


@pytest.fixture
async def postgres_router_url(router_url: str) -> AsyncIterator[str]:
    if not router_url.startswith("postgresql"):
        pytest.skip("two instances sharing one database is a PostgreSQL deployment")
    yield router_url


async def test_two_instances_never_assign_a_lead_twice(
    postgres_router_url: str, broker: EmbeddedBroker, topic_prefix: str,
) -> None:
    settings = RouterSettings(
        database_url=postgres_router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN,
        webhook_allowed_urls=ALLOWED_WEBHOOKS,
        sla_accept_seconds=3600, sla_reminder_fraction=0, timer_interval_seconds=0.5,
        notify_poll_seconds=30,
    )
    leads = [f"lead-{number}" for number in range(2000)]
    async with running_app(create_app(settings)) as first, running_app(
        create_app(settings)
    ) as second:
        for number in range(8):
            # No webhook: this test is about assignments, not deliveries.
            answer = await (first if number % 2 else second).post(
                "/v1/people", headers=ADMIN,
                json={"name": f"Rep {number}", "email": f"rep{number}@seller.example"})
            assert answer.status_code == 201
        await produce_leads(broker.bootstrap_servers, settings.topics.scores, leads)
        db = Database(postgres_router_url)
        try:
            counts = await eventually(lambda: per_lead(db), until=lambda got: len(got) == 2000,
                                      timeout=90, interval=0.5)
            async with db.reading() as session:
                by_rep = dict((await session.execute(text(
                    "SELECT sdr_id, count(*) FROM router_assignment GROUP BY sdr_id"))).all())
        finally:
            await db.dispose()
    doubled = {lead: count for lead, count in counts.items() if count != (1, 1)}
    assert doubled == {}
    assert sorted(by_rep.values()) == [250] * 8, "round robin across both instances drifted"


async def test_concurrent_redelivery_to_two_instances_assigns_once(
    router: Router, router_url: str,
) -> None:
    """Both instances apply the same batch at once (a rebalance): one offer per lead."""
    await router.add_sdr("Ada")
    router.clock.advance(1)
    await router.add_sdr("Bob")
    other_db = Database(router_url)
    twin = Router(other_db, router.clock, router.settings, router.context)
    events = [scored(f"lead-{number}", clock=router.clock) for number in range(100)]
    try:
        for start in range(0, 100, 10):
            batch = events[start:start + 10]
            await asyncio.gather(router.consume(*batch), twin.consume(*batch))
    finally:
        await other_db.dispose()
    counts = await per_lead(router.db)
    assert len(counts) == 100
    assert set(counts.values()) == {(1, 1)}


async def test_timers_pending_when_the_router_is_killed_all_fire_after_restart(
    router_url: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "LEADRELAY_DATA_DIR": str(tmp_path),
        "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "LEADRELAY_KAFKA_TOPIC_PREFIX": topic_prefix,
        "LEADRELAY_ROUTER_DATABASE_URL": router_url,
        **SERVE_SECRETS,
        "LEADRELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "LEADRELAY_WEBHOOK_ALLOWED_URLS": ALLOWED_WEBHOOKS,
        "LEADRELAY_SLA_ACCEPT_SECONDS": "4",
        "LEADRELAY_SLA_REMINDER_FRACTION": "0",
        "LEADRELAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    router = ServiceProcess("router", port, env, tmp_path / "router.log")
    db = Database(router_url)
    leads = [f"lead-{number}" for number in range(30)]
    try:
        router.start()
        await asyncio.to_thread(wait_until_ready, [router])
        async with httpx.AsyncClient(base_url=router.url, headers=ADMIN, timeout=10) as client:
            for name in ("ada", "bob", "cy"):
                answer = await client.post("/v1/sdrs", json={
                    "name": name, "email": f"{name}@seller.example",
                    "webhook_url": "http://127.0.0.1:9/hook"})
                assert answer.status_code == 201
        await produce_leads(broker.bootstrap_servers, f"{topic_prefix}.scores", leads)
        offered = await eventually(lambda: per_lead(db), until=lambda got: len(got) == 30,
                                   timeout=30)
        assert set(offered.values()) == {(1, 1)}
        router.kill()
        async with db.reading() as session:
            latest_deadline = await session.scalar(
                text("SELECT max(deadline_at) FROM router_assignment"))
        assert latest_deadline is not None
        await asyncio.sleep(5)  # every deadline passes while the router is dead
        router.start()
        await asyncio.to_thread(wait_until_ready, [router])

        async def escalated() -> dict[str, Any]:
            async with db.reading() as session:
                return dict((await session.execute(text(
                    "SELECT status, count(*) FROM router_assignment "
                    "WHERE attempt = 1 GROUP BY status"))).all())

        fired = await eventually(escalated, until=lambda got: got.get("escalated") == 30,
                                 timeout=30)
        assert fired == {"escalated": 30}
        after = await per_lead(db)
        assert all(total >= 2 and active == 1 for total, active in after.values())
    finally:
        router.stop()
        await db.dispose()
