"""The console over HTTP, in-process: one-time sign-in links, session cookies and sign-out,
CSRF on every form, a rep's inbox showing their own leads only and acting on them."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from leadrelay.broker import EmbeddedBroker
from services.router.app import create_app
from services.router.console import REDACT_SIGN_IN_LINKS
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.receiver import ALLOWED_WEBHOOKS
from tests.router.test_api import produce
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, public_base_url="http://testserver",
        admin_token=ADMIN_TOKEN, webhook_allowed_urls=ALLOWED_WEBHOOKS,
        sla_accept_seconds=600, sla_reminder_fraction=0, timer_interval_seconds=0.1,
    )


async def add_rep(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    answer = await client.post("/v1/people", headers=ADMIN, json={
        "name": name, "email": f"{name.lower()}@seller.example", "role": "sdr"})
    assert answer.status_code == 201, answer.text
    joined: dict[str, str] = answer.json()
    return joined


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def sign_in_with_link(client: httpx.AsyncClient, person_id: str) -> httpx.Response:
    issued = await client.post(f"/v1/people/{person_id}/sign-in-links", headers=ADMIN)
    assert issued.status_code == 201, issued.text
    path = issued.json()["url"].removeprefix("http://testserver")
    opened = await client.get(path)
    return await client.post(path, data={"csrf": csrf_of(opened)})


async def test_a_sign_in_link_works_once_and_signing_out_ends_the_session(
    settings: RouterSettings,
) -> None:
    async with running_app(create_app(settings, clock=ManualClock())) as client:
        ann = await add_rep(client, "Ann")
        issued = await client.post(f"/v1/people/{ann['id']}/sign-in-links", headers=ADMIN)
        path = issued.json()["url"].removeprefix("http://testserver")
        opened = await client.get(path)
        without_csrf = await client.post(path, data={"csrf": "forged"})
        # Each sign-in form gets a fresh CSRF nonce: the refusal above gave a new one.
        signed = await client.post(path, data={"csrf": csrf_of(without_csrf)})
        cookie_header = signed.headers["set-cookie"]
        session_cookie = client.cookies.get("leadrelay_console")
        inbox = await client.get("/console/inbox")
        reused = await client.get(path)
        sign_out_forged = await client.post("/console/sign-out", data={"csrf": "forged"})
        still_in = await client.get("/console/inbox")
        signed_out = await client.post("/console/sign-out", data={"csrf": csrf_of(inbox)})
        client.cookies.set("leadrelay_console", session_cookie or "", path="/console")
        after = await client.get("/console/inbox")
        not_a_person = await client.post("/v1/people/nobody/sign-in-links", headers=ADMIN)
        no_admin = await client.post(f"/v1/people/{ann['id']}/sign-in-links")
    assert opened.status_code == 200 and "Sign in" in opened.text
    assert without_csrf.status_code == 403
    assert signed.status_code == 303 and signed.headers["location"] == "/console"
    assert "HttpOnly" in cookie_header and "SameSite=strict" in cookie_header
    assert "Path=/console" in cookie_header and "Secure" not in cookie_header
    assert inbox.status_code == 200 and "Sign out Ann" in inbox.text
    assert reused.status_code == 404 and "used already" in reused.text
    assert sign_out_forged.status_code == 403 and still_in.status_code == 200
    assert signed_out.status_code == 303
    assert after.status_code == 303 and after.headers["location"] == "/console/sign-in"
    assert not_a_person.status_code == 404 and no_admin.status_code == 401


async def test_a_token_signs_in_and_a_wrong_one_does_not(settings: RouterSettings) -> None:
    async with running_app(create_app(settings, clock=ManualClock())) as client:
        ann = await add_rep(client, "Ann")
        form = await client.get("/console/sign-in")
        wrong = await client.post("/console/sign-in",
                                  data={"csrf": csrf_of(form), "token": "lr_wrong"})
        no_csrf = await client.post("/console/sign-in", data={"token": ann["token"]})
        right = await client.post("/console/sign-in",
                                  data={"csrf": csrf_of(no_csrf), "token": ann["token"]})
        inbox = await client.get("/console/inbox")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert no_csrf.status_code == 403
    assert right.status_code == 303
    assert "Sign out Ann" in inbox.text


async def test_a_rep_sees_and_works_only_their_own_leads(settings: RouterSettings) -> None:
    clock = ManualClock()
    async with running_app(create_app(settings, clock=clock)) as ann_client, \
            httpx.AsyncClient(transport=ann_client._transport,
                              base_url="http://testserver") as ben_client:
        ann, ben = await add_rep(ann_client, "Ann"), await add_rep(ann_client, "Ben")
        await sign_in_with_link(ann_client, ann["id"])
        await sign_in_with_link(ben_client, ben["id"])
        await produce(settings, settings.topics.scores, "lead-1",
                      encode_event(scored("lead-1", clock=clock)))

        async def offered() -> list[dict[str, str]]:
            answer = await ann_client.get("/v1/assignments", headers=ADMIN)
            listed: list[dict[str, str]] = answer.json()
            return listed

        (assignment,) = await eventually(offered)
        holder, other = (ann_client, ben_client) if assignment["sdr_id"] == ann["id"] else (
            ben_client, ann_client)
        inbox = await holder.get("/console/inbox")
        elsewhere = await other.get("/console/inbox")
        base = f"/console/assignments/{assignment['id']}"
        stolen = await other.post(f"{base}/accept", data={"csrf": csrf_of(elsewhere)})
        forged = await holder.post(f"{base}/accept", data={"csrf": "forged"})
        accepted = await holder.post(f"{base}/accept", data={"csrf": csrf_of(inbox)})
        twice = await holder.post(f"{base}/accept", data={"csrf": csrf_of(inbox)})
        no_reason = await holder.post(f"{base}/disqualify", data={"csrf": csrf_of(inbox)})
        disqualified = await holder.post(f"{base}/disqualify", data={
            "csrf": csrf_of(inbox), "reason_code": "no_budget", "note": "next year"})
        await asyncio.sleep(0)
        final = (await holder.get(f"/v1/assignments/{assignment['id']}", headers=ADMIN)).json()
        emptied = await holder.get("/console/inbox")
    assert "Ada Lovelace" in inbox.text and "Why you:" in inbox.text
    holder_name = "Ann" if holder is ann_client else "Ben"
    assert re.search(rf"Why you:</strong> {holder_name} got the lead by rule \S+ \(", inbox.text)
    assert f'action="{base}/accept"' in inbox.text
    assert "Ada Lovelace" not in elsewhere.text and assignment["id"] not in elsewhere.text
    assert stolen.status_code == 404
    assert forged.status_code == 403
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("done=accept")
    assert twice.status_code == 409
    assert no_reason.status_code == 303 and no_reason.headers["location"].endswith("error=reason")
    assert disqualified.status_code == 303
    assert final["status"] == "disqualified" and final["reason_code"] == "no_budget"
    assert "Ada Lovelace" not in emptied.text


def test_the_access_log_never_shows_a_sign_in_link_secret() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/console/sign-in/s3cr3t-Link_value", "1.1", 200), None)
    REDACT_SIGN_IN_LINKS.filter(record)
    assert "s3cr3t" not in record.getMessage()
    assert "/console/sign-in/[redacted]" in record.getMessage()
