"""The scoring model over HTTP: read, publish (JSON or YAML), clear 422s, preview; and the
lifecycle and report endpoints. The scorer runs in-process with the real broker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from leadrelay.broker import EmbeddedBroker
from services.scorer.app import create_app
from services.scorer.scoring_model import load_scoring_model
from services.scorer.settings import ScorerSettings
from shared.clock import ManualClock
from shared.events import LeadProfile, LeadReceived, LeadReceivedData
from tests.conftest import migrate
from tests.scorer.test_score_api import produce
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, running_app

pytestmark = pytest.mark.broker

LEAD_ID = "0b7b0a0e-5a53-4a53-9a53-1f5b3c9d2e77"
PROBLEM = "application/problem+json"


@pytest.fixture
def settings(database_url: str, broker: EmbeddedBroker, topic_prefix: str) -> ScorerSettings:
    migrate("scorer", database_url)
    return ScorerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        admin_token=ADMIN_TOKEN,
        scoring_model_refresh_seconds=0.2,
    )


def draft(version: str, **changes: Any) -> dict[str, Any]:
    return {**load_scoring_model().document(), "version": version, **changes}


async def installed(client: httpx.AsyncClient) -> httpx.Response:
    return await eventually(
        lambda: client.get("/v1/scoring-model"), until=lambda answer: answer.status_code == 200
    )


async def test_publish_read_and_refuse_scoring_models(settings: ScorerSettings) -> None:
    app = create_app(settings, clock=ManualClock())
    async with running_app(app, headers=ADMIN_HEADERS) as client:
        first = await installed(client)
        invalid = await client.put("/v1/scoring-model", json=draft(
            "v9", thresholds={"warm": 70, "hot": 60},
            fit_rules=[{"id": "x", "field": "budget", "operator": "equals", "value": 1,
                        "points": 1}],
        ))
        unreadable = await client.put("/v1/scoring-model", content=b"version: [",
                                      headers={"content-type": "application/yaml"})
        published = await client.put(
            "/v1/scoring-model",
            content=yaml.safe_dump(draft("v9", thresholds={"warm": 10, "hot": 20})).encode(),
            headers={"content-type": "application/yaml"},
        )
        again = await client.put("/v1/scoring-model", json=draft("v9"))
        current = await client.get("/v1/scoring-model")

    assert (first.json()["version"], first.json()["source"]) == ("default-2", "file")
    assert first.json()["document"] == load_scoring_model().document()
    assert (invalid.status_code, invalid.headers["content-type"]) == (422, PROBLEM)
    body = invalid.json()
    assert body["title"] == "Invalid scoring model"
    assert {(error["field"], error["message"]) for error in body["errors"]} >= {
        ("thresholds", "Value error, warm threshold (70) is above hot (60)"),
    }
    assert any(error["field"] == "fit_rules.0.equals.field"
               and "unknown lead field 'budget'" in error["message"]
               for error in body["errors"])
    assert unreadable.status_code == 422
    assert "not a readable document" in unreadable.json()["detail"]
    assert published.status_code == 200, published.text
    assert (published.json()["version"], published.json()["source"]) == ("v9", "api")
    assert (again.status_code, again.json()["title"]) == (409, "Version already published")
    assert current.json()["version"] == "v9"
    assert current.json()["document"]["thresholds"] == {"warm": 10, "hot": 20}


async def test_preview_scores_a_sample_against_a_draft_without_publishing(
    settings: ScorerSettings,
) -> None:
    sample = {
        "lead": {"email": "ada@acme.io", "company": "Acme", "country": "FR",
                 "employee_count": 300},
        "signals": [
            {"signal_id": "d1", "signal_type": "content_download",
             "signal_at": "2026-01-01T09:00:00Z"},
            {"signal_id": "d2", "signal_type": "content_download",
             "signal_at": "2026-01-31T09:00:00Z"},
        ],
        "at": "2026-01-31T09:00:00Z",
    }
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        await installed(client)
        in_force = await client.post("/v1/scoring-model/preview", json=sample)
        with_draft = await client.post("/v1/scoring-model/preview", json={
            **sample, "model": draft("draft-1", mql={"min_total": 40})
        })
        bad_draft = await client.post("/v1/scoring-model/preview", json={
            **sample, "model": {"version": "x"}
        })
        still = await client.get("/v1/scoring-model")

    assert in_force.status_code == 200, in_force.text
    body = in_force.json()
    assert (body["score"], body["fit"], body["engagement"]) == (60, 30, 30)
    assert (body["temperature"], body["mql"], body["model_version"]) == ("hot", True, "default-2")
    [download] = [line for line in body["breakdown"] if line["rule_id"] == "content-download"]
    assert download == {"rule_id": "content-download", "points": 30.0, "raw_points": 40.0,
                        "reason": "Downloaded content", "evidence": ["d2", "d1"]}
    assert body["next_change_at"] is not None
    assert with_draft.json()["model_version"] == "draft-1"
    assert (bad_draft.status_code, bad_draft.json()["errors"][0]["field"]) == (422, "thresholds")
    assert still.json()["version"] == "default-2"


async def test_stage_api_history_and_rejection_report(settings: ScorerSettings) -> None:
    lead = LeadReceived(
        producer="ingest", lead_id=LEAD_ID,
        data=LeadReceivedData(lead=LeadProfile(email="ada@acme.io", company="Acme",
                                               demo_requested=True, source="webinar")),
    )
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        unknown = await client.post(f"/v1/leads/{LEAD_ID}/stage", json={"stage": "customer"})
        await produce(settings, lead)
        await eventually(lambda: client.get(f"/v1/leads/{LEAD_ID}/score"),
                         until=lambda answer: answer.status_code == 200, timeout=30)
        illegal = await client.post(f"/v1/leads/{LEAD_ID}/stage", json={"stage": "customer"})
        no_reason = await client.post(f"/v1/leads/{LEAD_ID}/stage", json={"stage": "recycled"})
        recycled = await client.post(f"/v1/leads/{LEAD_ID}/stage",
                                     json={"stage": "recycled", "reason": "wrong_timing"})
        repeated = await client.post(f"/v1/leads/{LEAD_ID}/stage",
                                     json={"stage": "recycled", "reason": "wrong_timing"})
        history = await client.get(f"/v1/leads/{LEAD_ID}/stage-history")
        score = await client.get(f"/v1/leads/{LEAD_ID}/score")
        no_history = await client.get("/v1/leads/nobody/stage-history")
        report = await client.get("/v1/reports/rejections")
        bad_since = await client.get("/v1/reports/rejections", params={"since": "yesterday"})

    assert (unknown.status_code, unknown.headers["content-type"]) == (404, PROBLEM)
    assert (illegal.status_code, illegal.headers["content-type"]) == (409, PROBLEM)
    assert (illegal.json()["from_stage"], illegal.json()["to_stage"]) == ("mql", "customer")
    assert "cannot move to 'customer'" in illegal.json()["detail"]
    assert no_reason.status_code == 422
    assert recycled.json() == {"lead_id": LEAD_ID, "stage": "recycled", "moved": True}
    assert repeated.json() == {"lead_id": LEAD_ID, "stage": "recycled", "moved": False}
    assert [(step["from_stage"], step["to_stage"], step["reason"], step["cause"])
            for step in history.json()] == [
        ("lead", "mql", "buying_signal", "profile"),
        ("mql", "recycled", "wrong_timing", "crm"),
    ]
    assert history.json()[0]["rule_ids"] == ["demo-requested"]
    assert score.json()["stage"] == "recycled"
    assert no_history.status_code == 404
    assert report.json() == {"since": None, "by_source": [], "by_rule": []}
    assert bad_since.status_code == 422
