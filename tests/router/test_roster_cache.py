"""The roster cache stays correct with several router instances: a roster change made through
instance A's API, and the offers A makes, are seen by instance B's next decision; a
transaction that rolls back leaves nothing in the cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from leadrelay.broker import EmbeddedBroker
from services.router import service
from services.router.app import create_app
from services.router.consumer import RouterConsumer
from services.router.handlers import handler_table
from services.router.models import INBOX
from services.router.service import RouterContext
from services.router.settings import RouterSettings
from shared.db import Database
from tests.router.conftest import ADMIN, ADMIN_TOKEN, Router, scored
from tests.router.receiver import ALLOWED_WEBHOOKS
from tests.support import running_app

pytestmark = pytest.mark.broker


@pytest.fixture
async def instance_a(
    router: Router, broker: EmbeddedBroker, topic_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, RouterContext]]:
    """Another router process on B's database (`router` is instance B): its API and state."""
    settings = RouterSettings(
        database_url=router.settings.database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_prefix=topic_prefix,
        admin_token=ADMIN_TOKEN, sla_reminder_fraction=0, webhook_allowed_urls=ALLOWED_WEBHOOKS,
        timer_interval_seconds=60, notify_poll_seconds=60,
    )
    app = create_app(settings, clock=router.clock)
    async with running_app(app) as client:
        client.headers.update(ADMIN)
        yield client, app.state.router_context


async def owner(router: Router, lead_id: str) -> str:
    [offer] = await router.assignments(lead_id)
    return str(offer["sdr_id"])


async def test_a_roster_change_through_instance_a_is_seen_by_instance_b(
    router: Router, instance_a: tuple[httpx.AsyncClient, RouterContext]
) -> None:
    client, _ = instance_a
    cache = router.context.roster_cache
    ada = (await client.post("/v1/people", json={
        "name": "Ada", "email": "ada@seller.example", "webhook_url": "http://127.0.0.1:9/a",
    })).json()["id"]
    await router.consume(scored("lead-1", clock=router.clock))
    assert await owner(router, "lead-1") == ada
    loads = cache.loads
    await router.consume(scored("lead-2", clock=router.clock))
    assert cache.loads == loads  # nothing changed: B decided from its cache

    router.clock.advance(1)
    away = await client.put(f"/v1/people/{ada}/presence", json={"presence": "away"})
    assert away.status_code == 200
    bob = (await client.post("/v1/people", json={
        "name": "Bob", "email": "bob@seller.example", "webhook_url": "http://127.0.0.1:9/b",
    })).json()["id"]
    await router.consume(scored("lead-3", clock=router.clock))
    assert await owner(router, "lead-3") == bob
    assert cache.loads == loads + 1

    router.clock.advance(1)
    await client.put(f"/v1/people/{bob}/presence", json={"presence": "offline"})
    await client.put(f"/v1/people/{ada}/presence", json={"presence": "available"})
    await router.consume(scored("lead-4", clock=router.clock))
    assert await owner(router, "lead-4") == ada


async def test_offers_made_by_instance_a_are_seen_by_instance_b(
    router: Router, instance_a: tuple[httpx.AsyncClient, RouterContext]
) -> None:
    _, context_a = instance_a
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))  # B: Ada, then Bob is next
    assert await owner(router, "lead-1") == ada
    refreshes = router.context.roster_cache.refreshes

    router.clock.advance(1)
    db_a = Database(router.settings.database_url)
    try:
        consumer_a = RouterConsumer(context=context_a, name="router", db=db_a, inbox=INBOX,
                                    consumer=None, handlers=handler_table(context_a),
                                    clock=router.clock)
        await router.consume(scored("lead-2", clock=router.clock), consumer=consumer_a)
    finally:
        await db_a.dispose()
    assert await owner(router, "lead-2") == bob  # A's offer moved Bob to the back

    router.clock.advance(1)
    await router.consume(scored("lead-3", clock=router.clock))
    assert await owner(router, "lead-3") == ada  # B knows Bob just had one
    assert router.context.roster_cache.refreshes == refreshes + 1


async def test_a_rolled_back_batch_leaves_the_cache_as_it_was(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    cache = router.context.roster_cache
    seq, reps = cache.seq, dict(cache.reps)

    class RolledBackError(Exception):
        pass

    with pytest.raises(RolledBackError):
        async with router.db.transaction() as session:
            await service.route_scored_leads(
                session, router.context, [scored("lead-2", clock=router.clock)])
            raise RolledBackError
    assert (cache.seq, cache.reps) == (seq, reps)
    await router.consume(scored("lead-3", clock=router.clock))
    assert await owner(router, "lead-1") == ada
    assert await owner(router, "lead-3") == bob
    assert await router.assignments("lead-2") == []
