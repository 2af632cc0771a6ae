"""The funnel report: counts and conversion lead -> MQL -> SAL -> SQL -> opportunity ->
customer per source and channel over a period, the median time in each stage, and the cost
per lead, SQL and customer from the channel costs the admin sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import insert

from leadrelay.broker import EmbeddedBroker
from services.scorer.app import create_app
from services.scorer.funnel import ChannelCost, FunnelLead, funnel_report
from services.scorer.models import lead_score, stage_change
from services.scorer.settings import ScorerSettings
from shared.clock import ManualClock
from shared.db import Database
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, running_app

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PATH = ("lead", "mql", "sal", "sql", "opportunity", "customer")


def cohort(channel: str, leads: int, customers: int, source: str = "web") -> list[FunnelLead]:
    """`leads` leads, of which `customers` went all the way, a day in each stage."""
    found = []
    for number in range(leads):
        stages = PATH if number < customers else PATH[:1]
        found.append(FunnelLead(f"{channel}-{number}", source, channel, {
            stage: START + timedelta(days=position) for position, stage in enumerate(stages)}))
    return found


def test_a_cheap_channel_can_cost_more_per_customer() -> None:
    leads = cohort("ads", 20, 1) + cohort("events", 10, 3, source="trade show")
    costs = {"ads": ChannelCost(Decimal("30"), "EUR"), "events": ChannelCost(Decimal("150"), "EUR")}
    report = funnel_report(leads, costs)
    ads, events = report["by_channel"]["ads"], report["by_channel"]["events"]
    assert ads["counts"] == {"lead": 20, "mql": 1, "sal": 1, "sql": 1, "opportunity": 1,
                             "customer": 1}
    assert ads["conversion"]["lead_to_customer"] == 0.05
    assert events["conversion"]["lead_to_customer"] == 0.3
    assert ads["cost"]["cost_per_customer"] == "600.00"
    assert events["cost"]["cost_per_customer"] == "500.00"
    assert events["cost"]["cost_per_sql"] == "500.00"
    assert ads["median_seconds_in_stage"]["sal"] == 86400.0
    assert report["by_source"]["trade show"]["counts"]["lead"] == 10
    assert "cost" not in report["overall"]


def test_a_lead_accepted_before_it_was_mql_passed_mql_and_recycling_is_no_stage() -> None:
    skipped = FunnelLead("a", "web", "ads", {"lead": START, "sal": START + timedelta(hours=2)})
    report = funnel_report([skipped], {})["overall"]
    assert report["counts"]["mql"] == 1 and report["counts"]["sal"] == 1
    assert report["median_seconds_in_stage"]["lead"] is None  # no MQL moment to measure to


@pytest.fixture
def settings(database_url: str, broker: EmbeddedBroker, topic_prefix: str) -> ScorerSettings:
    migrate("scorer", database_url)
    return ScorerSettings(database_url=database_url,
                          kafka_bootstrap_servers=broker.bootstrap_servers,
                          kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN)


async def seed(url: str) -> None:
    """Three leads in November (ads: one customer; events: one SQL, one lead) and one before."""
    def lead(lead_id: str, received_at: datetime, channel: str) -> dict[str, Any]:
        return {"lead_id": lead_id, "profile": {"email": f"{lead_id}@buyer.example",
                                                "source": "web",
                                                "attribution": {"channel": channel}},
                "score": 80.0, "fit": 40.0, "engagement": 40.0, "temperature": "hot",
                "model_version": "test", "breakdown": [], "scored_at": received_at,
                "updated_at": received_at, "received_at": received_at}

    def moves(lead_id: str, stages: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{"lead_id": lead_id, "from_stage": before, "to_stage": after, "cause": "test",
                 "changed_at": START + timedelta(hours=position + 1)}
                for position, (before, after) in enumerate(pairwise(stages))]

    database = Database(url)
    try:
        async with database.transaction() as session:
            await session.execute(insert(lead_score), [
                lead("won", START, "ads"), lead("sql", START, "events"),
                lead("new", START, "events"),
                lead("october", START - timedelta(days=20), "ads")])
            await session.execute(insert(stage_change), moves("won", PATH)
                                  + moves("sql", PATH[:4]) + moves("october", PATH))
    finally:
        await database.dispose()


async def test_the_funnel_and_channel_costs_over_http(settings: ScorerSettings) -> None:
    await seed(settings.database_url)
    clock = ManualClock(START + timedelta(days=10))
    async with running_app(create_app(settings, clock=clock), headers=ADMIN_HEADERS) as client:
        set_cost = await client.put("/v1/channel-costs/events",
                                    json={"cost_per_lead": "150", "currency": "EUR"})
        bad_cost = await client.put("/v1/channel-costs/ads",
                                    json={"cost_per_lead": "-1", "currency": "euro"})
        report = await client.get("/v1/reports/funnel", params={
            "since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"})
        backwards = await client.get("/v1/reports/funnel", params={
            "since": "2026-12-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"})
        listed = await client.get("/v1/channel-costs")
        audited = await client.get("/v1/audit", params={"subject": "channel-cost:events"})
        deleted = await client.delete("/v1/channel-costs/events")
        gone = await client.delete("/v1/channel-costs/events")
    assert set_cost.status_code == 200, set_cost.text
    assert bad_cost.status_code == 422
    assert report.status_code == 200, report.text
    found = report.json()
    assert found["overall"]["counts"] == {"lead": 3, "mql": 2, "sal": 2, "sql": 2,
                                          "opportunity": 1, "customer": 1}
    assert found["overall"]["conversion"]["sql_to_opportunity"] == 0.5
    assert found["overall"]["median_seconds_in_stage"]["lead"] == 3600.0
    events = found["by_channel"]["events"]
    assert events["cost"] == {"currency": "EUR", "cost_per_lead": "150.00", "spend": "300.00",
                              "cost_per_sql": "300.00", "cost_per_customer": None}
    assert found["by_channel"]["ads"]["cost"] is None
    assert backwards.status_code == 422
    assert backwards.headers["content-type"] == "application/problem+json"
    assert [row["channel"] for row in listed.json()] == ["events"]
    assert [entry["action"] for entry in audited.json()["entries"]] == ["channel_cost.set"]
    assert deleted.status_code == 204 and gone.status_code == 404
