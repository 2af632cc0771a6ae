"""A draft scoring model replayed over the last days' leads, against the model in force: MQL
and temperature counts under each, the leads whose verdict changes; each lead scored as it
was at its latest score (its signals by then), erased and older leads left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from leadrelay.broker import EmbeddedBroker
from services.scorer.app import create_app
from services.scorer.models import lead_score, signal
from services.scorer.scoring_model import load_scoring_model
from services.scorer.settings import ScorerSettings
from shared.clock import ManualClock
from shared.db import Database
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, running_app

SCORED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
CTO = {"employee_count": 500, "country": "FR", "job_title": "CTO"}


@pytest.fixture
def settings(database_url: str, broker: EmbeddedBroker, topic_prefix: str) -> ScorerSettings:
    migrate("scorer", database_url)
    return ScorerSettings(database_url=database_url,
                          kafka_bootstrap_servers=broker.bootstrap_servers,
                          kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN)


def row(lead_id: str, profile: dict[str, Any], *, received_at: datetime = SCORED_AT,
        erased: bool = False) -> dict[str, Any]:
    return {"lead_id": lead_id, "profile": {"email": f"{lead_id}@buyer.example", **profile},
            "score": 0.0, "fit": 0.0, "engagement": 0.0, "temperature": "cold",
            "model_version": "old", "breakdown": [], "scored_at": SCORED_AT,
            "updated_at": SCORED_AT, "received_at": received_at,
            "erased_at": SCORED_AT if erased else None}


async def seed(url: str) -> None:
    database = Database(url)
    try:
        async with database.transaction() as session:
            await session.execute(insert(lead_score), [
                row("cto", CTO), row("plain", {}), row("demo", {"demo_requested": True}),
                row("erased", CTO, erased=True),
                row("old", CTO, received_at=SCORED_AT - timedelta(days=40))])
            # A demo request after the lead's latest score is no fact of that moment.
            await session.execute(insert(signal).values(
                lead_id="plain", signal_id="later", signal_type="demo_request",
                signal_at=SCORED_AT + timedelta(days=1), properties={},
                recorded_at=SCORED_AT + timedelta(days=1)))
    finally:
        await database.dispose()


async def test_a_draft_model_replayed_over_the_last_days(settings: ScorerSettings) -> None:
    await seed(settings.database_url)
    draft = {**load_scoring_model().document(), "version": "draft",
             "thresholds": {"warm": 1, "hot": 2}, "mql": {"min_fit": 0, "min_total": 1}}
    clock = ManualClock(SCORED_AT + timedelta(days=2))
    async with running_app(create_app(settings, clock=clock), headers=ADMIN_HEADERS) as client:
        await eventually(lambda: client.get("/v1/scoring-model"),
                         until=lambda answer: answer.status_code == 200)
        replayed = await client.post("/v1/scoring-model/replay",
                                     json={"model": draft, "days": 30})
        invalid = await client.post("/v1/scoring-model/replay", json={
            "model": {**draft, "thresholds": {"warm": 70, "hot": 60}}})
        published = await client.get("/v1/scoring-model")
    assert replayed.status_code == 200, replayed.text
    found = replayed.json()
    assert found["leads"] == 3
    assert found["current"]["mql"] == 1 and found["draft"]["mql"] == 2
    assert found["current"]["temperature"] == {"hot": 1, "warm": 1, "cold": 1}
    assert found["draft"]["temperature"] == {"hot": 2, "warm": 0, "cold": 1}
    assert (found["became_mql"], found["no_longer_mql"]) == (1, 0)
    assert [(lead["lead_id"], lead["current"]["temperature"], lead["draft"]["temperature"])
            for lead in found["changed"]] == [("cto", "warm", "hot")]
    assert invalid.status_code == 422
    assert published.json()["version"] != "draft"
