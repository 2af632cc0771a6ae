"""The whole flow through real processes: a lead goes in, an SDR is notified, the SLA holds.

On both set-ups (`tests/e2e/conftest.py`): the embedded broker with SQLite, and Apache Kafka
(SASL_SSL, SCRAM) with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from tests.e2e.conftest import Platform
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

SLA_SECONDS = 2.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def system(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningSystem]:
    data_dir: Path = tmp_path_factory.mktemp(f"e2e-{platform.name}")
    with running_system(
        bootstrap_servers=platform.bootstrap_servers,
        data_dir=data_dir,
        topic_prefix=platform.topic_prefix("e2e"),
        sla_seconds=SLA_SECONDS,
        database_url=platform.database_url,
        broker_env=platform.service_env,
        allowed_webhook_urls=[receiver.base_url],
    ) as running:
        yield running


async def add_sdrs(client: httpx.AsyncClient, system: RunningSystem, receiver: WebhookReceiver,
                   count: int) -> list[dict[str, Any]]:
    sdrs = []
    for number in range(count):
        answer = await client.post(
            f"{system.url('router')}/v1/sdrs", headers=system.admin_headers, json={
            "name": f"SDR {number}", "email": f"sdr{number}.{uuid.uuid4().hex[:8]}@team.example",
            "webhook_url": receiver.new_endpoint(),
        })
        assert answer.status_code == 201, answer.text
        sdrs.append(answer.json())
    return sdrs


async def submit_hot_lead(client: httpx.AsyncClient, system: RunningSystem, email: str) -> str:
    answer = await client.post(f"{system.url('ingest')}/v1/leads", json={
        "email": email, "name": "Hot Lead", "company": "Acme", "demo_requested": True,
    })
    assert answer.status_code == 202, answer.text
    lead_id: str = answer.json()["lead_id"]
    return lead_id


async def notifications(receiver: WebhookReceiver, lead_id: str, count: int) -> list[Any]:
    async def probe() -> list[Any]:
        return receiver.for_lead(lead_id)

    return await eventually(probe, until=lambda got: len(got) >= count, timeout=30)


async def assignments(client: httpx.AsyncClient, system: RunningSystem, lead_id: str) -> Any:
    answer = await client.get(f"{system.url('router')}/v1/assignments", params={"lead_id": lead_id},
                              headers=system.admin_headers)
    assert answer.status_code == 200
    return answer.json()


async def test_posted_lead_reaches_an_sdr_webhook(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 2)
        lead_id = await submit_hot_lead(client, system, "first.touch@acme.example")
        (path, body), = await notifications(receiver, lead_id, 1)
        score = (await client.get(f"{system.url('scorer')}/v1/leads/{lead_id}/score")).json()
        listed = await assignments(client, system, lead_id)
        speed = (await client.get(f"{system.url('router')}/v1/reports/speed-to-lead",
                                  headers=system.admin_headers)).json()
    assert path.startswith("/sdr/")
    assert body["lead_id"] == lead_id
    assert score["temperature"] == "hot"
    assert [assignment["status"] for assignment in listed] == ["offered"]
    # Ingest's reception reached the router through the scorer: every hop of system time.
    hops = speed["overall"]
    assert list(hops)[:3] == ["received_to_scored", "scored_to_assigned", "assigned_to_notified"]
    assert hops["received_to_scored"]["count"] >= 1
    assert 0 <= hops["received_to_scored"]["p50"] < 30


async def test_unaccepted_assignment_escalates_to_another_sdr(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 2)
        lead_id = await submit_hot_lead(client, system, "nobody.answers@acme.example")
        first, second = await notifications(receiver, lead_id, 2)
        listed = await assignments(client, system, lead_id)
    assert first[0] != second[0], "escalated to the same SDR"
    statuses = sorted(assignment["status"] for assignment in listed)
    assert statuses == ["escalated", "offered"]


async def test_accepted_assignment_is_not_escalated(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 2)
        lead_id = await submit_hot_lead(client, system, "quick.answer@acme.example")
        (_, body), = await notifications(receiver, lead_id, 1)
        accepted = await client.post(body["accept_url"])
        assert accepted.status_code == 200, accepted.text
        await asyncio.sleep(SLA_SECONDS * 2)
        listed = await assignments(client, system, lead_id)
    assert [assignment["status"] for assignment in listed] == ["accepted"]
    assert len(receiver.for_lead(lead_id)) == 1


async def test_erasure_at_ingest_reaches_the_router_through_the_scorer(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 1)
        lead_id = await submit_hot_lead(client, system, "forget.me@acme.example")
        await notifications(receiver, lead_id, 1)
        [offer] = await assignments(client, system, lead_id)
        assert offer["lead"]["email"] == "forget.me@acme.example"

        erased = await client.delete(f"{system.url('ingest')}/v1/leads/{lead_id}",
                                     headers=system.admin_headers)
        assert erased.status_code == 204, erased.text

        async def router_copy() -> Any:
            return (await assignments(client, system, lead_id))[0]["lead"]

        assert await eventually(router_copy, until=lambda lead: lead == {}, timeout=30) == {}
        score = (await client.get(f"{system.url('scorer')}/v1/leads/{lead_id}/score")).json()
    assert "forget.me" not in str(score)


async def test_a_disqualified_lead_ends_recycled_to_nurturing_in_the_scorer(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    """The router's disqualify, through the broker, is a move the scorer's lifecycle takes."""
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 1)
        lead_id = await submit_hot_lead(client, system, "not.a.fit@acme.example")
        (_, body), = await notifications(receiver, lead_id, 1)
        accepted = await client.post(body["accept_url"])
        assert accepted.status_code == 200, accepted.text
        disqualified = await client.post(
            f"{system.url('router')}/v1/assignments/{body['assignment_id']}/disqualify",
            json={"reason_code": "no_budget"})
        assert disqualified.status_code == 200, disqualified.text

        async def stages() -> list[tuple[str, str | None, str]]:
            answer = await client.get(
                f"{system.url('scorer')}/v1/leads/{lead_id}/stage-history")
            return [(step["to_stage"], step["reason"], step["cause"]) for step in answer.json()]

        history = await eventually(stages, until=lambda got: len(got) >= 3, timeout=30)
        score = (await client.get(f"{system.url('scorer')}/v1/leads/{lead_id}/score")).json()
    assert history == [
        ("mql", "buying_signal", "profile"),
        ("sal", None, "assignment.accepted"),
        ("recycled", "no_budget", "assignment.disqualified"),
    ]
    assert score["stage"] == "recycled"

    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        # It comes back on its own: a demo request makes it MQL again, and an SDR gets it.
        signal = await client.post(f"{system.url('ingest')}/v1/signals", json={
            "lead_id": lead_id, "type": "demo_request"})
        assert signal.status_code == 202, signal.text
        await notifications(receiver, lead_id, 2)
        history = await eventually(stages, until=lambda got: len(got) >= 4, timeout=30)
        offers = await assignments(client, system, lead_id)
    assert history[-1][:2] == ("mql", "buying_signal")
    assert sorted(offer["status"] for offer in offers) == ["disqualified", "offered"]


async def test_new_leads_are_scored_while_the_campaign_lane_is_down_and_its_signals_wait(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    """The scorer runs as two processes: `scorer` (new leads, buying signals) and
    `scorer-signals` (the campaigns' signals, a consumer group of its own)."""
    lane = system.services["scorer-signals"]

    async def email_points(client: httpx.AsyncClient, lead_id: str) -> float:
        score = (await client.get(f"{system.url('scorer')}/v1/leads/{lead_id}/score")).json()
        return sum(line["points"] for line in score["breakdown"] if line["rule_id"] == "email-open")

    lane.stop()  # SIGTERM: it leaves its consumer group, so the restart rejoins at once
    try:
        async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
            await add_sdrs(client, system, receiver, 1)
            lead_id = await submit_hot_lead(client, system, "lanes@acme.example")
            await notifications(receiver, lead_id, 1)
            opened = await client.post(f"{system.url('ingest')}/v1/signals", json={
                "lead_id": lead_id, "type": "email_open"})
            assert opened.status_code == 202, opened.text
            await asyncio.sleep(1.5)
            assert await email_points(client, lead_id) == 0
    finally:
        system.restart("scorer-signals")
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        points = await eventually(lambda: email_points(client, lead_id),
                                  until=lambda got: got > 0, timeout=30)
    assert round(points) == 10
