"""End to end through the real broker: ingest and the scorer in-process, the router's events
produced as the router would. A form lead is scored, its signals make it hot and MQL, an SDR's
acceptance and rejection move its stage, and the rejection shows in the feedback report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from leadrelay.broker import EmbeddedBroker
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.scorer.app import create_app as create_scorer
from services.scorer.settings import ScorerSettings
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Envelope,
    SignalRecorded,
    SignalRecordedData,
    encode_event,
)
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, read_topic, running_app

pytestmark = pytest.mark.broker


async def produce(bootstrap_servers: str, topic: str, events: Sequence[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, key=event.lead_id.encode(),
                                         value=encode_event(event))
    finally:
        await producer.stop()


async def score_of(client: httpx.AsyncClient, lead_id: str, until: Any) -> Any:
    answer = await eventually(
        lambda: client.get(f"/v1/leads/{lead_id}/score"),
        until=lambda response: response.status_code == 200 and until(response.json()),
        timeout=30,
    )
    return answer.json()


async def published_until_recycled(bootstrap_servers: str, topic: str) -> list[dict[str, Any]]:
    """What the scorer published, up to the `lead.scored` that says the lead was recycled: at
    least 7 events (scored, MQL, scored, SAL, scored, recycled, scored), more when signals
    came in separate batches."""
    for count in range(7, 12):
        published = await read_topic(bootstrap_servers, topic, count)
        if any(event["type"] == "lead.scored" and event["data"]["stage"] == "recycled"
               for event in published):
            return published
    raise AssertionError(f"no lead.scored for the recycled lead in {published}")


@pytest.fixture
def both_migrated(database_url: str) -> str:
    """One database for both services: their tables carry their names as prefix."""
    migrate("ingest", database_url)
    migrate("scorer", database_url)
    return database_url


async def test_a_lead_from_the_form_to_a_rejection_through_the_broker(
    both_migrated: str, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    database_url = both_migrated
    common: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "kafka_topic_prefix": topic_prefix,
        "admin_token": ADMIN_TOKEN,
    }
    scorer_settings = ScorerSettings(**common, lead_keys_url="http://ingest.test")
    topics = scorer_settings.topics
    ingest_app, scorer_app = create_ingest(IngestSettings(**common)), create_scorer(scorer_settings)
    async with running_app(ingest_app, headers=ADMIN_HEADERS) as ingest, \
            running_app(scorer_app, headers=ADMIN_HEADERS) as scorer:
        # The scorer fetches the lead keys from this ingest, in this process.
        keyring = scorer_app.state.scorer_context.keyring
        keyring.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest_app))
        submitted = await ingest.post("/v1/leads", json={
            "email": "grace@acme.example", "company": "Acme", "country": "FR",
            "employee_count": 150, "source": "linkedin",
        })
        assert submitted.status_code == 202, submitted.text
        lead_id: str = submitted.json()["lead_id"]
        first = await score_of(scorer, lead_id, until=lambda body: True)

        now = datetime.now(UTC)
        signals = [
            SignalRecorded(producer="ingest", lead_id=lead_id, data=SignalRecordedData(
                signal_id=signal_id, signal_type=signal_type, signal_at=now, url=url))
            for signal_id, signal_type, url in [
                ("s-1", "content_download", None),
                ("s-2", "email_click", None),
                ("s-1", "content_download", None),  # sent twice by the tool
                ("s-3", "form_submitted", "https://acme.example/pricing"),
            ]
        ]
        await produce(broker.bootstrap_servers, topics.leads, signals)
        hot = await score_of(scorer, lead_id, until=lambda body: body["buying_signal"])

        await produce(broker.bootstrap_servers, topics.assignments, [
            AssignmentAccepted(producer="router", lead_id=lead_id, data=AssignmentAcceptedData(
                assignment_id="a-1", sdr_id="sdr-1", accepted_at=now, within_sla=True)),
            AssignmentRejected(producer="router", lead_id=lead_id, data=AssignmentRejectedData(
                assignment_id="a-1", sdr_id="sdr-1", reason_code="no_budget")),
        ])
        recycled = await score_of(scorer, lead_id, until=lambda body: body["stage"] == "recycled")
        history = (await scorer.get(f"/v1/leads/{lead_id}/stage-history")).json()
        report = (await scorer.get("/v1/reports/rejections")).json()
        published = await published_until_recycled(broker.bootstrap_servers, topics.scores)

    assert (first["score"], first["temperature"], first["stage"]) == (20, "cold", "lead")
    assert (hot["temperature"], hot["buying_signal"], hot["score"]) == ("hot", True, 85)
    assert {line["rule_id"]: line["evidence"] for line in hot["breakdown"]} == {
        "company-size-mid": ["employee_count"], "target-country": ["region"],
        "email-click": ["s-2"], "content-download": ["s-1"], "pricing-form": ["s-3"],
    }
    assert recycled["temperature"] == "hot"
    assert [(step["to_stage"], step["cause"]) for step in history] == [
        ("mql", "signal"), ("sal", "assignment.accepted"), ("recycled", "assignment.rejected")
    ]
    assert report["by_source"] == [
        {"source": "linkedin", "outcome": "rejected", "reason_code": "no_budget", "count": 1}
    ]
    # MQL came at 55 (fit 20, download 20, click 15), before the pricing form.
    assert {row["rule_id"] for row in report["by_rule"]} == {
        "company-size-mid", "target-country", "email-click", "content-download"
    }
    kinds = [(event["type"], event["data"].get("stage") or event["data"].get("to_stage"))
             for event in published if event["lead_id"] == lead_id]
    assert kinds.count(("lead.stage_changed", "mql")) == 1
    assert ("lead.stage_changed", "recycled") in kinds
    # One `lead.scored` per batch of signals: one for each signal if they came one by one,
    # fewer if some came together, and then always the state they led to.
    scores = [event["data"]["score"] for event in published
              if event["type"] == "lead.scored" and event["data"]["stage"] in ("lead", "mql")]
    assert scores[0] == 20 and scores[-1] == 85
    assert scores == [score for score in [20, 40, 55, 85] if score in scores]
    # The scores carry the lead's personal fields sealed with its key, never readable.
    assert "grace@acme.example" not in str(published)
    assert all("sealed" in event for event in published if event["type"] == "lead.scored")
