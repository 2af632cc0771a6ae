"""The SSRF guard on the router: a webhook URL that may not be called is refused when it is
registered (422 saying why) and again when something is sent to it; nothing is connected to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from sqlalchemy import insert

from leadrelay.broker import EmbeddedBroker, free_port
from services.router.app import create_app
from services.router.models import notification
from services.router.notifications import Notifier
from services.router.settings import RouterSettings
from tests.router.conftest import ADMIN, ADMIN_TOKEN, Router, router_settings
from tests.support import running_app

Listener = tuple[int, list[str]]


@pytest.fixture
async def loopback_listener() -> AsyncIterator[Listener]:
    """A socket listening on loopback; the list records every connection it accepts."""
    connections: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    port = free_port()
    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield port, connections
    finally:
        server.close()
        await server.wait_closed()


def refused_urls(port: int) -> list[tuple[str, str]]:
    """(URL, what the refusal says): loopback ones point at the listener."""
    return [
        ("http://10.0.0.1/hook", "10.0.0.1, which is not a public internet address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, which is not a public"),
        ("http://100.100.100.200/", "100.100.100.200, which is not a public"),
        (f"http://[::ffff:127.0.0.1]:{port}/hook", "not a public internet address"),
        (f"http://0x7f000001:{port}/hook", "127.0.0.1, which is not a public"),
        (f"http://2130706433:{port}/hook", "127.0.0.1, which is not a public"),
        (f"http://localhost:{port}/hook", "localhost resolves to"),
        (f"http://ada:hunter2@127.0.0.1:{port}/hook", "user name or password"),
    ]


@pytest.mark.broker
async def test_each_refused_url_gets_a_422_that_says_why_and_is_never_called(
    router_url: str, broker: EmbeddedBroker, topic_prefix: str, loopback_listener: Listener,
) -> None:
    port, connections = loopback_listener
    settings = RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN,
    )
    async with running_app(create_app(settings)) as client:
        client.headers.update(ADMIN)
        for number, (url, reason) in enumerate(refused_urls(port)):
            for field in ("webhook_url", "slack_webhook_url"):
                answer = await client.post("/v1/people", json={
                    "name": "Ada", "email": f"ada{number}@seller.example", field: url})
                assert answer.status_code == 422, (url, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["field"] == field
                assert reason in answer.json()["detail"], (url, answer.json())
        added = await client.post("/v1/people", json={"name": "Bo", "email": "bo@seller.example"})
        patched = await client.patch(f"/v1/people/{added.json()['id']}",
                                     json={"webhook_url": f"http://127.0.0.1:{port}/hook"})
        imported = await client.post("/v1/roster/import", json={"people": [
            {"name": "Cy", "email": "cy@seller.example",
             "webhook_url": "http://169.254.169.254/"}]})
        people = (await client.get("/v1/people")).json()
    assert patched.status_code == 422 and imported.status_code == 422
    assert [person["email"] for person in people] == ["bo@seller.example"]
    await asyncio.sleep(0.1)
    assert connections == []


async def test_urls_stored_before_the_guard_are_refused_when_sent(
    router: Router, loopback_listener: Listener,
) -> None:
    """Rows already queued (say, by a version without the guard) are checked at send time."""
    port, connections = loopback_listener
    now = router.clock.now()
    async with router.db.transaction() as session:
        await session.execute(insert(notification), [
            {"url": url, "payload": {"type": "lead.nurture"}, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now, "channel": "generic",
             "kind": "nurture", "message_id": f"msg_{number}"}
            for number, (url, _) in enumerate(refused_urls(port))
        ])
    notifier = Notifier(router.db, router.clock,
                        router_settings(router.settings.database_url, webhook_allowed_urls=""),
                        router.context.deliveries)
    async with notifier.http_client() as client:
        deliveries = await notifier.deliver_due(client)
    assert len(deliveries) == len(refused_urls(port))
    for delivery in deliveries:
        assert delivery.outcome == "failed"
        assert delivery.error is not None and delivery.error.startswith("refused:")
    await asyncio.sleep(0.1)
    assert connections == []


def test_a_nurture_webhook_url_with_credentials_stops_the_router_at_start() -> None:
    with pytest.raises(ValidationError, match="user name or password"):
        RouterSettings(nurture_webhook_url="https://marketing:hunter2@hooks.example.com/in")
