"""The scorer in-process with the real broker: consume a lead, serve its score, publish it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from leadrelay.broker import EmbeddedBroker
from services.scorer.app import create_app
from services.scorer.settings import ScorerSettings
from shared.events import LeadProfile, LeadReceived, LeadReceivedData, encode_event
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, read_topic, running_app

pytestmark = pytest.mark.broker

LEAD_ID = "9d0f6a52-7f43-4c5e-8a52-3c1f0b8e6d21"


@pytest.fixture
def settings(database_url: str, broker: EmbeddedBroker, topic_prefix: str) -> ScorerSettings:
    migrate("scorer", database_url)
    return ScorerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        admin_token=ADMIN_TOKEN,
    )


async def produce(settings: ScorerSettings, event: LeadReceived) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.leads, key=event.lead_id.encode(), value=encode_event(event)
        )
    finally:
        await producer.stop()


async def test_a_received_lead_is_scored_served_and_published(settings: ScorerSettings) -> None:
    event = LeadReceived(
        producer="ingest", lead_id=LEAD_ID, correlation_id="request-1",
        data=LeadReceivedData(
            lead=LeadProfile(email="ada@acme.io", company="Acme", employee_count=300,
                             demo_requested=True, account_key="acme.io")
        ),
    )
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        unknown = await client.get(f"/v1/leads/{LEAD_ID}/score")
        await produce(settings, event)
        answer = await eventually(
            lambda: client.get(f"/v1/leads/{LEAD_ID}/score"),
            until=lambda response: response.status_code == 200,
            timeout=30,
        )
        # Ready once both consumers (new leads; the campaigns' signals) have joined.
        ready = await eventually(lambda: client.get("/readyz"),
                                 until=lambda response: response.status_code == 200, timeout=30)
        published = await read_topic(
            settings.kafka_bootstrap_servers, settings.topics.scores, 2
        )

    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["title"] == "Lead not found"
    assert ready.status_code == 200
    body = answer.json()
    assert {key: body[key] for key in ("lead_id", "score", "fit", "engagement", "temperature",
                                       "model_version")} == {
        "lead_id": LEAD_ID, "score": 50, "fit": 20, "engagement": 30, "temperature": "hot",
        "model_version": "default-2",
    }
    assert [line["rule_id"] for line in body["breakdown"]] == ["company-size-large",
                                                               "demo-requested"]
    assert (body["stage"], body["buying_signal"]) == ("mql", True)
    assert datetime.fromisoformat(body["scored_at"]).utcoffset() == timedelta(0)
    changed, scored = sorted(published, key=lambda event: event["type"] == "lead.scored")
    assert (changed["type"], changed["data"]["to_stage"]) == ("lead.stage_changed", "mql")
    assert scored["type"] == "lead.scored"
    assert (scored["lead_id"], scored["producer"], scored["correlation_id"]) == (
        LEAD_ID, "scorer", "request-1"
    )
    assert scored["data"]["score"] == 50
    assert scored["data"]["lead"]["email"] == "ada@acme.io"
