"""router's HTTP API and the whole flow through the real broker, against a real database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from leadrelay.broker import EmbeddedBroker
from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored, types_of
from tests.router.receiver import ALLOWED_WEBHOOKS, WebhookReceiver
from tests.support import eventually, read_topic, running_app

pytestmark = pytest.mark.broker


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        public_base_url="http://testserver/",
        sla_accept_seconds=1,
        admin_token=ADMIN_TOKEN,
        sla_reminder_fraction=0,
        # The roster test registers example.com names that resolve nowhere.
        webhook_allowed_urls=f"{ALLOWED_WEBHOOKS},https://hooks.seller.example,http://x.example",
        timer_interval_seconds=0.1,
        notify_poll_seconds=5,
    )


async def test_the_roster(settings: RouterSettings) -> None:
    async with running_app(create_app(settings)) as client:
        client.headers.update(ADMIN)
        created = await client.post(
            "/v1/sdrs",
            json={"name": " Grace ", "email": "Grace@Seller.example",
                  "webhook_url": "https://hooks.seller.example/grace"},
        )
        paused = await client.post(
            "/v1/sdrs",
            json={"name": "Alan", "email": "alan@seller.example",
                  "webhook_url": "http://127.0.0.1:9/alan", "active": False},
        )
        duplicate = await client.post(
            "/v1/sdrs",
            json={"name": "G", "email": "grace@seller.example", "webhook_url": "http://x.example"},
        )
        invalid = await client.post(
            "/v1/sdrs", json={"name": "", "email": "nope", "webhook_url": "ftp://x.example/"}
        )
        sdr_id = created.json()["id"]
        one = await client.get(f"/v1/sdrs/{sdr_id}")
        roster = await client.get("/v1/sdrs")
        missing = await client.get("/v1/sdrs/nope")
        no_assignment = await client.get("/v1/assignments/nope")
        no_accept = await client.post("/v1/assignments/nope/accept")
        none_yet = await client.get("/v1/assignments", params={"lead_id": "lead-1"})
    assert created.status_code == 201
    assert created.headers["location"] == f"/v1/people/{sdr_id}"
    assert created.json()["token"].startswith("lr_")
    assert created.json()["webhook_secret"].startswith("whsec_")
    assert created.json()["name"] == "Grace"
    assert created.json()["email"] == "grace@seller.example"
    assert created.json()["active"] is True
    assert created.json()["last_assigned_at"] is None
    assert paused.json()["active"] is False
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert invalid.status_code == 422
    assert {error["field"] for error in invalid.json()["errors"]} == {
        "name", "email", "webhook_url",
    }
    assert one.json() == {
        key: value for key, value in created.json().items()
        if key not in ("token", "webhook_secret")
    }
    assert [sdr["email"] for sdr in roster.json()] == [
        "grace@seller.example", "alan@seller.example",
    ]
    assert missing.status_code == 404
    assert no_assignment.status_code == 404
    assert no_accept.status_code == 404
    assert no_accept.json()["title"] == "Assignment not found"
    assert none_yet.json() == []


async def test_a_hot_lead_reaches_an_sdr_and_moves_on_when_the_sla_lapses(
    settings: RouterSettings,
) -> None:
    async with WebhookReceiver() as receiver, running_app(create_app(settings)) as client:
        client.headers.update(ADMIN)
        ada = await add_sdr(client, "ada", receiver.url("/ada"))
        bob = await add_sdr(client, "bob", receiver.url("/bob"))
        event = scored("lead-1", clock=ManualClock())
        await produce(settings, settings.topics.scores, event.lead_id, encode_event(event))

        await eventually(lambda: paths(receiver), until=lambda got: got[:1] == ["/ada"])
        first = (await client.get("/v1/assignments", params={"lead_id": "lead-1"})).json()
        assert first[-1]["sdr_id"] == ada
        assert receiver.bodies()[0]["assignment_id"] == first[-1]["id"]
        assert receiver.bodies()[0]["accept_url"].startswith(
            f"http://testserver/v1/assignments/{first[-1]['id']}/accept?token="
        )

        await eventually(lambda: paths(receiver), until=lambda got: got[:2] == ["/ada", "/bob"])
        history = (await client.get("/v1/assignments", params={"lead_id": "lead-1"})).json()
        lapsed = history[-1]
        assert lapsed["status"] == "escalated"
        assert history[-2]["sdr_id"] == bob
        assert history[-2]["attempt"] == 2
        refused = await client.post(receiver.bodies()[0]["accept_url"])
        accepted = await eventually(lambda: accept_newest(client), until=lambda r: r.is_success)
        events = await read_topic(
            settings.kafka_bootstrap_servers, settings.topics.assignments, 3
        )
    assert refused.status_code == 409
    assert refused.json()["assignment_status"] == "escalated"
    assert accepted.json()["status"] == "accepted"
    assert accepted.json()["lead"]["email"] == "lead-1@buyer.example"
    assert types_of(events)[:3] == [
        "assignment.offered", "assignment.escalated", "assignment.offered",
    ]
    assert events[1]["data"]["from_sdr_id"] == ada
    assert events[1]["data"]["to_sdr_id"] == bob


async def add_sdr(client: httpx.AsyncClient, name: str, webhook_url: str) -> str:
    answer = await client.post(
        "/v1/sdrs",
        json={"name": name, "email": f"{name}@seller.example", "webhook_url": webhook_url},
    )
    assert answer.status_code == 201, answer.text
    sdr_id: str = answer.json()["id"]
    return sdr_id


async def produce(settings: RouterSettings, topic: str, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def paths(receiver: WebhookReceiver) -> list[str]:
    return [request.path for request in receiver.received]


async def accept_newest(client: httpx.AsyncClient) -> httpx.Response:
    """Accept the lead's current offer; it may lapse first (the SLA is 1 s), then try again."""
    newest: dict[str, Any] = (
        await client.get("/v1/assignments", params={"lead_id": "lead-1", "limit": 1})
    ).json()[0]
    return await client.post(f"/v1/assignments/{newest['id']}/accept")
