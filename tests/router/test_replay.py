"""What-if replay of a draft rule set over the leads really routed: per rep actual, current
and draft counts, the leads that change rep or go unrouted, the fairness deviation."""

from __future__ import annotations

import asyncio

import pytest

from leadrelay.broker import EmbeddedBroker
from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.receiver import ALLOWED_WEBHOOKS, WebhookReceiver
from tests.router.test_api import produce
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker

LEADS = [("lead-1", {"language": "fr"}), ("lead-2", {"language": "fr"}),
         ("lead-3", {"language": "en"}), ("lead-4", {"language": "en", "employee_count": 5000})]
DRAFT = {"rules": [
    {"id": "french", "when": {"language": "fr"}, "pool": "French"},
    {"id": "big", "when": {"employee_count": {"gte": 1000}}, "pool": "Enterprise"},
    {"id": "rest", "pool": "Rest"},
]}


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, public_base_url="http://testserver",
        admin_token=ADMIN_TOKEN, webhook_allowed_urls=ALLOWED_WEBHOOKS,
        sla_accept_seconds=600, sla_reminder_fraction=0, timer_interval_seconds=0.1,
    )


async def test_a_draft_replayed_over_the_leads_really_routed(settings: RouterSettings) -> None:
    clock = ManualClock()
    async with WebhookReceiver() as receiver, running_app(
        create_app(settings, clock=clock)
    ) as client:
        client.headers.update(ADMIN)
        for team in ("French", "Rest", "Enterprise"):
            assert (await client.post("/v1/teams", json={"name": team})).status_code == 201
        ids = {}
        for name, teams, languages in (("Ann", ["French"], ["fr"]), ("Ben", ["Rest"], []),
                                       ("Cat", ["Rest"], [])):
            clock.advance(1)
            joined = await client.post("/v1/people", json={
                "name": name, "email": f"{name.lower()}@seller.example", "teams": teams,
                "languages": languages, "webhook_url": receiver.url(f"/{name.lower()}")})
            assert joined.status_code == 201, joined.text
            ids[name] = joined.json()["id"]
        current = await client.put("/v1/rules", json={"rules": [{"id": "all", "pool": "Rest"}]})
        assert current.status_code == 200, current.text
        for count, (lead_id, profile) in enumerate(LEADS, start=1):
            clock.advance(60)
            await produce(settings, settings.topics.scores, lead_id,
                          encode_event(scored(lead_id, clock=clock, **profile)))
            await eventually(lambda: asyncio.sleep(0, receiver.bodies()),
                             until=lambda bodies, count=count: len(bodies) == count)
        offers = (await client.get("/v1/assignments")).json()
        replayed = await client.post("/v1/rules/replay", json={"rules": DRAFT, "days": 7})
        unknown_team = await client.post("/v1/rules/replay", json={
            "rules": {"rules": [{"id": "x", "pool": "Nowhere"}]}})
        typo = await client.post("/v1/rules/replay", json={
            "rules": {"rules": [{"id": "x", "when": {"colour": "blue"}}]}})
        after = await client.get("/v1/rules")
    assert replayed.status_code == 200, replayed.text
    found = replayed.json()
    actual = {rep: sum(1 for offer in offers if offer["sdr_id"] == rep) for rep in ids.values()}
    per_rep = {row["rep_id"]: row for row in found["per_rep"]}
    assert {rep: per_rep.get(rep, {}).get("actual", 0) for rep in ids.values()} == actual
    assert {name: per_rep[rep]["current"] for name, rep in ids.items()} == {
        "Ann": 0, "Ben": 2, "Cat": 2}
    assert {name: per_rep[rep]["draft"] for name, rep in ids.items()} == {
        "Ann": 2, "Ben": 1, "Cat": 0}
    assert found["leads"] == 4 and found["changed_rep"] == 3
    assert {row["lead_id"]: row["draft_rule_id"] for row in found["changed"]} == {
        "lead-1": "french", "lead-2": "french", "lead-4": "big"}
    assert found["unrouted"] == {"current": 0, "draft": 1}
    assert found["unrouted_under_draft"] == ["lead-4"]
    deviation = {pool["pool"]: pool["max_deviation"] for pool in found["fairness"]["draft"]}
    assert deviation == {"French": 0.0, "Rest": 0.5}
    assert [pool["max_deviation"] for pool in found["fairness"]["current"]] == [0.0]
    assert unknown_team.status_code == 422 and unknown_team.json()["team"] == "Nowhere"
    assert typo.status_code == 422 and "colour" in typo.text
    assert after.json()["version"] == "1"
