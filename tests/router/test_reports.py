"""Reports per team, rep and source over a period; and, through the running app with the real
broker, the delivery log of an assignment, the hand-overs list, segments in the YAML import
and the Prometheus metrics the issue names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from leadrelay.broker import EmbeddedBroker
from services.router import assignment_actions, reports, repository, roster
from services.router.app import create_app
from services.router.escalation import EscalationTimer
from services.router.service import RouterContext
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, Router, scored
from tests.router.receiver import ALLOWED_WEBHOOKS, Reply, WebhookReceiver
from tests.router.test_api import produce
from tests.support import eventually, running_app


async def route(router: Router, lead_id: str, *, waited: float, **profile: Any) -> None:
    """A lead scored `waited` seconds before the router takes it."""
    event = scored(lead_id, clock=router.clock, **profile)
    router.clock.advance(waited)
    await router.consume(event)


async def test_speed_to_lead_per_team_rep_and_source_over_a_period(router: Router) -> None:
    north_team = await router.add_team("North")
    south_team = await router.add_team("South")
    north = await router.add_person("Nora", teams=["North"])
    south = await router.add_person("Sam", teams=["South"])
    await router.set_rules({"id": "north", "when": {"country": "NO"}, "pool": "North"},
                           {"id": "south", "pool": "South"})
    await route(router, "before", waited=100, country="NO", source="web")
    router.clock.advance(timedelta(hours=1))
    since = router.clock.now()
    await route(router, "web-north", waited=2, country="NO", source="web")
    await route(router, "web-south", waited=4, country="ES", source="web")
    await route(router, "partner-south", waited=6, country="ES", source="partner")
    until = router.clock.now() + timedelta(microseconds=1)
    router.clock.advance(timedelta(hours=1))
    await route(router, "after", waited=100, country="ES", source="partner")

    async with router.db.reading() as session:
        rows = [dict(row) for row in await repository.assignments_between(session, since, until)]
    found = reports.speed_to_lead(rows)
    hop = "scored_to_assigned"
    assert found["overall"][hop] == {"count": 3, "p50": 4.0, "p90": 6.0, "p99": 6.0}
    assert {team: value[hop]["p50"] for team, value in found["by_team"].items()} == {
        north_team: 2.0, south_team: 4.0}
    assert {rep: value[hop]["count"] for rep, value in found["by_rep"].items()} == {
        north: 1, south: 2}
    assert {source: value[hop]["p99"] for source, value in found["by_source"].items()} == {
        "partner": 6.0, "web": 4.0}



async def test_system_hops_count_first_offers_and_a_queue_claim_is_no_sla_met(
    router: Router,
) -> None:
    """A lead lapses twice (re-offer, then the team's queue) and is claimed: only the first
    offer is system time, and the claim is a breach, as `assignment.accepted` says."""
    settings = router.settings.model_copy(update={"max_reoffers": 1})
    context = RouterContext.build(settings, router.context.outbox, router.clock)
    router = Router(router.db, router.clock, settings, context)
    timer = EscalationTimer(router.db, context, interval=1, batch_size=10)
    team = await router.add_team("Inside")
    ann = await router.add_person("Ann", teams=["Inside"])
    await router.add_person("Ben", teams=["Inside"])
    await router.set_rules({"id": "all", "pool": "Inside"})
    since = router.clock.now()
    await route(router, "lead-1", waited=2)
    for _ in range(2):
        router.clock.advance(timedelta(minutes=3))
        await timer.tick()
    async with router.db.transaction() as session:
        await assignment_actions.claim_from_queue(session, context, "lead-1", ann,
                                                  frozenset({team}))
    async with router.db.reading() as session:
        rows = [dict(row) for row in await repository.assignments_between(
            session, since, router.clock.now() + timedelta(seconds=1))]
    assert [row["status"] for row in sorted(rows, key=lambda row: row["attempt"])] == [
        "escalated", "escalated", "accepted"]
    hop = reports.speed_to_lead(rows)["overall"]["scored_to_assigned"]
    assert (hop["count"], hop["p99"]) == (1, 2.0)
    accepted = [event for event in await router.events()
                if event["type"] == "assignment.accepted"]
    assert [event["data"]["within_sla"] for event in accepted] == [False]
    accept = reports.sla(rows)["accept"]
    assert (accept["met"], accept["breached"], accept["escalated"]) == (0, 3, 2)


async def test_fairness_targets_only_the_eligible_reps_of_the_pools_the_rules_use(
    router: Router,
) -> None:
    inside = await router.add_team("Inside")
    await router.add_team("Elsewhere")
    ann = await router.add_person("Ann", teams=["Inside"], weight=1)
    ben = await router.add_person("Ben", teams=["Inside"], weight=3)
    full = await router.add_person("Full", teams=["Inside"], capacity=0)
    apart = await router.add_person("Apart", teams=["Elsewhere"])
    await router.set_rules({"id": "all", "pool": "Inside"})
    router.clock.advance(timedelta(days=8))  # everyone present the whole window
    since = router.clock.now() - timedelta(days=7)
    for number in range(4):
        await route(router, f"lead-{number}", waited=1)
    async with router.db.reading() as session:
        rows = [dict(row) for row in await repository.assignments_between(
            session, since, router.clock.now() + timedelta(seconds=1))]
        pools, names = await roster.fairness_pools(session, router.context.rule_cache)
    found = reports.fairness(rows, pools, since, router.clock.now(), names)["by_pool"]
    assert [(pool["pool"], pool["team_id"], pool["role"]) for pool in found] == [
        ("Inside", inside, "sdr"), ("every ae", None, "ae")]
    shares = {rep["rep_id"]: rep for rep in found[0]["reps"]}
    assert set(shares) == {ann, ben}
    assert (shares[ann]["target_share"], shares[ben]["target_share"]) == (0.25, 0.75)
    assert shares[ann]["leads"] + shares[ben]["leads"] == 4
    assert shares[ben]["name"] == "Ben"
    assert found[0]["not_eligible"] == [{"rep_id": full, "name": "Full", "reason": "capacity 0"}]
    assert all(apart != rep["rep_id"] for pool in found for rep in pool["reps"])


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, public_base_url="http://testserver",
        admin_token=ADMIN_TOKEN, webhook_allowed_urls=ALLOWED_WEBHOOKS,
        timer_interval_seconds=0.1,
        sla_reminder_fraction=0, sla_accept_seconds=1, notify_poll_seconds=0.2,
    )


ROSTER = """
teams:
  - {name: AE}
people:
  - name: Ann
    email: ann@seller.example
    segments: [SMB, Enterprise]
    webhook_url: URL
  - {name: Closer, email: closer@seller.example, role: ae, teams: [AE], presence: away}
"""


@pytest.mark.broker
async def test_the_delivery_log_hand_overs_and_metrics_through_the_app(
    settings: RouterSettings,
) -> None:
    async with (
        WebhookReceiver([Reply(status=400)]) as receiver,
        running_app(create_app(settings)) as client,
    ):
        client.headers.update(ADMIN)
        imported = await client.post(
            "/v1/roster/import", content=ROSTER.replace("URL", receiver.url("/ann")),
            headers={"Content-Type": "application/yaml"})
        assert imported.status_code == 200, imported.text
        ann = {row["name"]: row for row in imported.json()["people_created"]}["Ann"]
        assert ann["segments"] == ["enterprise", "smb"]
        rules = await client.put("/v1/rules", json={"rules": [{"id": "all", "handoff_pool": "AE"}]})
        assert rules.status_code == 200, rules.text
        event = scored("lead-1", clock=ManualClock(), employee_count=20)
        await produce(settings, settings.topics.scores, "lead-1", encode_event(event))

        # The one SDR lets the offer lapse (1 s, by the database's clock): it is stranded.
        listed = await eventually(
            lambda: client.get("/v1/assignments", params={"lead_id": "lead-1"}),
            until=lambda answer: [row["status"] for row in answer.json()] == ["escalated"])
        first = listed.json()[0]
        deliveries = await eventually(
            lambda: client.get(f"/v1/assignments/{first['id']}/deliveries"),
            until=lambda answer: answer.json() and answer.json()[0]["log"])
        metrics = (await client.get("/metrics")).text

        # A qualified lead with no AE available: the hand-over waits and is listed.
        event = scored("lead-2", clock=ManualClock(), employee_count=20)
        await produce(settings, settings.topics.scores, "lead-2", encode_event(event))
        offered = await eventually(
            lambda: client.get("/v1/assignments", params={"lead_id": "lead-2"}),
            until=lambda answer: len(answer.json()) == 1)
        offer_id = offered.json()[0]["id"]
        accepted = await client.post(f"/v1/assignments/{offer_id}/accept")
        assert accepted.status_code == 200, accepted.text
        qualified = await client.post(f"/v1/assignments/{offer_id}/qualify",
                                      json={"bant": {"budget": "10k"}})
        assert qualified.status_code == 200, qualified.text
        handovers = (await client.get("/v1/handovers", params={"status": "waiting"})).json()
        bad_filter = await client.get("/v1/handovers", params={"status": "lost"})
    [log] = deliveries.json()
    assert (log["status"], log["last_status"]) == ("failed", 400)
    assert [attempt["status_code"] for attempt in log["log"]] == [400]
    for line in ('leadrelay_router_escalations_total{reason="sla_expired"} 1.0',
                 'leadrelay_router_sla_breaches_total{deadline="accept"} 1.0',
                 'leadrelay_router_delivery_failures_total{channel="generic"} 1.0',
                 'leadrelay_router_assignments_total{role="sdr",strategy="round_robin"} 1.0',
                 "# TYPE leadrelay_outbox_backlog gauge",
                 "# TYPE leadrelay_consumer_lag gauge"):
        assert line in metrics, line
    [waiting] = handovers
    assert (waiting["lead_id"], waiting["status"], waiting["attempts"]) == ("lead-2", "waiting", 1)
    closer = waiting["attempt_log"][0]["pools"][0]["excluded"]
    assert list(closer.values()) == [["presence_away"]]
    assert bad_filter.status_code == 422
