"""Action links: the Accept button of a notification opens a confirmation page (GET) whose
button accepts (POST); links expire, are bound to one assignment and action, survive a
restart of the router, and never reach a log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn

from leadrelay.broker import EmbeddedBroker, free_port
from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.receiver import ALLOWED_WEBHOOKS, WebhookReceiver
from tests.router.test_api import add_sdr, produce
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker

GRACE_SECONDS = 600.0


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, public_base_url="http://testserver",
        admin_token=ADMIN_TOKEN, webhook_allowed_urls=ALLOWED_WEBHOOKS,
        sla_accept_seconds=60, sla_reminder_fraction=0, timer_interval_seconds=0.1,
        action_link_grace_seconds=GRACE_SECONDS,
    )


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def token_of(url: str) -> str:
    return urlsplit(url).query.removeprefix("token=")


async def offer_two_leads(
    client: httpx.AsyncClient, settings: RouterSettings, receiver: WebhookReceiver,
    clock: ManualClock,
) -> list[tuple[str, str]]:
    """Two reps, two hot leads: the (assignment id, accept URL) of each offer."""
    await add_sdr(client, "ann", receiver.url("/ann"))
    await add_sdr(client, "ben", receiver.url("/ben"))
    for lead_id in ("lead-1", "lead-2"):
        event = scored(lead_id, clock=clock)
        await produce(settings, settings.topics.scores, lead_id, encode_event(event))
    await eventually(lambda: asyncio.sleep(0, receiver.bodies()),
                     until=lambda bodies: len(bodies) == 2)
    return sorted((body["assignment_id"], body["accept_url"]) for body in receiver.bodies())


def is_page(answer: httpx.Response) -> bool:
    return answer.headers["content-type"].startswith("text/html")


async def test_a_link_opens_a_page_whose_button_accepts_and_works_after_a_restart(
    settings: RouterSettings,
) -> None:
    clock = ManualClock()
    async with WebhookReceiver() as receiver:
        async with running_app(create_app(settings, clock=clock)) as client:
            client.headers.update(ADMIN)
            (first, first_url), (second, _) = await offer_two_leads(
                client, settings, receiver, clock)
        # A new process, the same settings: yesterday's links still work.
        async with running_app(create_app(settings, clock=clock)) as client:
            page = await client.get(relative(first_url))
            other_assignment = await client.get(
                f"/v1/assignments/{second}/accept?token={token_of(first_url)}")
            other_action = await client.post(
                f"/v1/assignments/{first}/reject?token={token_of(first_url)}",
                json={"reason_code": "other"})
            forged = await client.get(f"/v1/assignments/{first}/accept?token=1999999999.AAAA")
            confirmed = await client.post(f"/v1/assignments/{first}/accept/confirm",
                                          data={"token": token_of(first_url)})
            again = await client.get(relative(first_url))
            stored = await client.get(f"/v1/assignments/{first}", headers=ADMIN)
    assert page.status_code == 200 and is_page(page)
    html = page.text
    assert "Accept this lead" in html and "Ada Lovelace" in html and "Analytical Engines" in html
    assert f'<form method="post" action="/v1/assignments/{first}/accept/confirm">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "src=" not in html and "<link" not in html and "<script" not in html
    assert other_assignment.status_code == 404 and is_page(other_assignment)
    assert "not valid" in other_assignment.text
    assert other_action.status_code == 401  # a link is no credential for another action
    assert forged.status_code == 404 and "not valid" in forged.text
    assert confirmed.status_code == 200 and is_page(confirmed)
    assert "Lead accepted" in confirmed.text
    assert stored.json()["status"] == "accepted"
    assert again.status_code == 409 and "no longer waiting" in again.text


async def test_an_expired_link_gets_a_page_saying_so(settings: RouterSettings) -> None:
    clock = ManualClock()
    async with WebhookReceiver() as receiver, running_app(
        create_app(settings, clock=clock)
    ) as client:
        client.headers.update(ADMIN)
        (assignment_id, url), _ = await offer_two_leads(client, settings, receiver, clock)
        deadline = (await client.get(f"/v1/assignments/{assignment_id}")).json()["deadline_at"]
        clock.advance(timedelta(seconds=60 + GRACE_SECONDS - 5))
        still_open = await client.get(relative(url))
        clock.advance(timedelta(seconds=10))
        expired = await client.get(relative(url))
        confirm = await client.post(f"/v1/assignments/{assignment_id}/accept/confirm",
                                    data={"token": token_of(url)})
        api_call = await client.post(relative(url), headers={"Authorization": ""})
    assert deadline is not None
    assert still_open.status_code in (200, 409) and is_page(still_open)
    assert expired.status_code == 410 and is_page(expired)
    assert "This link has expired" in expired.text
    assert confirm.status_code == 410 and "expired" in confirm.text
    assert api_call.status_code == 401  # an expired link is no credential


@pytest.fixture
async def served_router(settings: RouterSettings) -> AsyncIterator[str]:
    """The router behind a real uvicorn server with its access log on; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=True,
        lifespan="on",
    ))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_token_never_reaches_the_logs(
    settings: RouterSettings, served_router: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with WebhookReceiver() as receiver, httpx.AsyncClient(
        base_url=served_router, headers=ADMIN, timeout=10
    ) as client:
        (assignment_id, url), _ = await offer_two_leads(
            client, settings, receiver, ManualClock())
        page = await client.get(relative(url))
        confirmed = await client.post(f"/v1/assignments/{assignment_id}/accept/confirm",
                                      data={"token": token_of(url)})
    assert page.status_code == 200 and confirmed.status_code == 200
    # Every record but those of this test's own client (httpx logs the URLs it requests).
    logged = "\n".join(f"{record.name} {record.getMessage()}" for record in caplog.records
                        if record.name != "httpx")
    assert f"/v1/assignments/{assignment_id}/accept?token=[redacted]" in logged
    assert token_of(url) not in logged
    assert token_of(url).split(".")[1] not in logged


def query_value(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


async def test_an_escalation_notice_carries_a_claim_link_and_a_late_claim_names_the_winner(
    settings: RouterSettings,
) -> None:
    """The lead lapses into the team's queue; the manager's notice has no accept link but a
    claim link whose page claims the lead; a later claim by the team's other manager is told
    who has it."""
    settings = settings.model_copy(update={"max_reoffers": 0})
    clock = ManualClock()
    async with WebhookReceiver() as receiver, running_app(
        create_app(settings, clock=clock)
    ) as client:
        client.headers.update(ADMIN)

        async def join(name: str, **fields: Any) -> dict[str, Any]:
            created = await client.post("/v1/people", json={
                "name": name, "email": f"{name.lower()}@seller.example",
                "webhook_url": receiver.url(f"/{name.lower()}"), **fields})
            assert created.status_code == 201, created.text
            person: dict[str, Any] = created.json()
            return person

        boss = await join("Boss", role="manager")
        made = await client.post("/v1/teams", json={
            "name": "Inside", "manager_email": "boss@seller.example"})
        assert made.status_code == 201, made.text
        deputy = await join("Deputy", role="manager", teams=["Inside"])
        await join("Ann", teams=["Inside"])
        stored = await client.put("/v1/rules", json={"rules": [{"id": "all", "pool": "Inside"}]})
        assert stored.status_code == 200, stored.text
        await produce(settings, settings.topics.scores, "lead-1",
                      encode_event(scored("lead-1", clock=clock)))
        await eventually(lambda: asyncio.sleep(0, receiver.bodies()),
                         until=lambda bodies: len(bodies) == 1)
        clock.advance(timedelta(seconds=61))
        [notice] = await eventually(
            lambda: asyncio.sleep(0, [body for body in receiver.bodies()
                                      if body["kind"] == "escalation"]),
            until=lambda found: len(found) == 1)
        claim_url = notice["claim_url"]
        page = await client.get(relative(claim_url))
        for_another = await client.get(relative(claim_url).replace(boss["id"], deputy["id"]))
        confirmed = await client.post("/v1/queue/lead-1/claim/confirm", data={
            "person": query_value(claim_url, "person"), "token": query_value(claim_url, "token")})
        later = await client.post("/v1/queue/lead-1/claim",
                                  headers={"Authorization": f"Bearer {deputy['token']}"})
        assignments = (await client.get("/v1/assignments", params={"lead_id": "lead-1"})).json()
    assert notice["accept_url"] is None and query_value(claim_url, "person") == boss["id"]
    assert page.status_code == 200 and is_page(page) and "Claim this lead" in page.text
    assert for_another.status_code == 404 and "not valid" in for_another.text
    assert confirmed.status_code == 200 and "Lead claimed" in confirmed.text
    assert later.status_code == 409, later.text
    assert later.headers["content-type"].startswith("application/problem+json")
    assert later.json()["detail"] == "Already claimed by Boss."
    assert [row["sdr_id"] for row in assignments if row["status"] == "accepted"] == [boss["id"]]
