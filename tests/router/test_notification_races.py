"""Two router instances recording `410 Gone` for the same endpoint at the same moment, on
PostgreSQL: neither deadlocks, the endpoint ends disabled and nothing pending is left for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from services.router import delivery_repository
from services.router.delivery_signal import DeliverySignal
from services.router.models import disabled_endpoint, notification
from services.router.notifications import Notifier
from shared.clock import ManualClock
from shared.db import Database
from tests.conftest import PG_ADMIN_DSN, create_pg_database, drop_pg_database, migrate, pg_url
from tests.router.conftest import router_settings
from tests.router.receiver import Reply, WebhookReceiver

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_router_url(postgres_available: bool) -> Iterator[str]:
    """A migrated throwaway PostgreSQL router database whose sessions give up waiting for a
    lock after a few seconds, so that a regression fails instead of hanging."""
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable")
    name = create_pg_database()

    async def limit_waits() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await connection.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '5s'")
            await connection.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout = '10s'")
        finally:
            await connection.close()

    try:
        migrate("router", pg_url(name))
        asyncio.run(limit_waits())
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
async def instances(pg_router_url: str) -> AsyncIterator[tuple[Notifier, Notifier]]:
    """Two router instances' notifiers, each with its own engine, on one database."""
    clock = ManualClock()
    settings = router_settings(pg_router_url)
    databases = [Database(pg_router_url), Database(pg_router_url)]
    try:
        first, second = (Notifier(db, clock, settings, DeliverySignal(), jitter=lambda: 0.0)
                         for db in databases)
        yield first, second
    finally:
        for db in databases:
            await db.dispose()


def pending_row(url: str, due: datetime) -> dict[str, Any]:
    return {"url": url, "channel": "generic", "kind": "reminder", "payload": {"type": "test"},
            "status": "pending", "attempts": 0, "next_attempt_at": due, "created_at": due}


async def test_two_instances_disabling_one_endpoint_at_once_both_commit(
    instances: tuple[Notifier, Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = instances
    now = first.clock.now()
    async with WebhookReceiver([Reply(410)] * 2) as receiver:
        url = receiver.url("/gone")
        async with first.db.transaction() as session:
            await delivery_repository.insert_notifications(
                session, [pending_row(url, now - timedelta(seconds=3 - n)) for n in range(3)])
        [one] = await first.claim(1)
        [other] = await second.claim(1)

        # Each instance has recorded its own row's outcome (and holds its lock) before either
        # disables the endpoint: the moment two 410s answered together meet.
        both_finished = asyncio.Barrier(2)
        disable_endpoint = delivery_repository.disable_endpoint

        async def disable_when_both_finished(*args: Any) -> None:
            await both_finished.wait()
            await disable_endpoint(*args)

        monkeypatch.setattr(delivery_repository, "disable_endpoint", disable_when_both_finished)
        async with first.http_client() as client_a, second.http_client() as client_b:
            async with asyncio.timeout(30):
                deliveries = await asyncio.gather(
                    first.deliver(client_a, one), second.deliver(client_b, other))
            monkeypatch.undo()
            assert await first.deliver_due(client_a) == []
            assert await second.deliver_due(client_b) == []

    assert [(d.outcome, d.status_code) for d in deliveries] == [("failed", 410)] * 2
    assert len(receiver.received) == 2
    async with first.db.reading() as session:
        disabled = list(await session.scalars(select(disabled_endpoint.c.url)))
        rows = await session.execute(
            select(notification.c.id, notification.c.status).where(notification.c.url == url))
        statuses = {notification_id: status for notification_id, status in rows}
    assert disabled == [url]
    third = (set(statuses) - {one["id"], other["id"]}).pop()
    assert statuses == {one["id"]: "failed", other["id"]: "failed", third: "cancelled"}
