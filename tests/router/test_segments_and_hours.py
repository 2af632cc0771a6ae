"""Segments and team working hours in routing: a lead's segment (its own field, else its
employee count's band) must be one its rep declares; a rep without hours of their own works
their team's; the hold, follow-the-sun and the shared queue go by the team's hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from services.router import repository, roster, roster_repository, service
from services.router.escalation import EscalationTimer
from services.router.models import lead, notification
from services.router.routing import LeadFacts, segment_of
from services.router.rules import RuleSet, first_match
from services.router.schemas import RosterDocument
from tests.router.conftest import Router, scored

HOT_ACCEPT = timedelta(minutes=2)
PARIS_HOURS = {"mon": ["09:00-10:01"], "tue": ["09:00-17:00"]}
"""Monday 09:00-10:01 and Tuesday 09:00-17:00 in Paris; the manual clock starts on a Monday
at 10:00 in Paris (09:00 UTC)."""


async def offer_of(router: Router, lead_id: str) -> dict[str, Any]:
    rows = await router.assignments(lead_id)
    return rows[-1]


async def store_rules(router: Router, document: dict[str, Any]) -> str:
    async with router.db.transaction() as session:
        row = await roster.store_rules(session, router.clock, RuleSet.model_validate(document))
    return str(row["version"])


# Segments, pure


@pytest.mark.parametrize(
    ("employees", "segment"),
    [(None, None), (0, "smb"), (199, "smb"), (200, "mid-market"), (999, "mid-market"),
     (1000, "enterprise"), (250_000, "enterprise")],
)
def test_default_bands(employees: int | None, segment: str | None) -> None:
    assert RuleSet(rules=[]).segment_of(employees) == segment


def test_bands_are_configurable_and_checked() -> None:
    rules = RuleSet.model_validate({"rules": [], "segments": [
        {"name": "Startup", "min_employees": 1}, {"name": "Corporate", "min_employees": 500}]})
    assert [rules.segment_of(count) for count in (0, 1, 499, 500)] == [
        None, "startup", "startup", "corporate"]
    assert segment_of(10, [("b", 5), ("a", 0), ("c", 50)]) == "b"
    with pytest.raises(ValueError, match="unique"):
        RuleSet.model_validate({"rules": [], "segments": [
            {"name": "a", "min_employees": 0}, {"name": "A", "min_employees": 9}]})
    with pytest.raises(ValueError, match="same employee count"):
        RuleSet.model_validate({"rules": [], "segments": [
            {"name": "a", "min_employees": 0}, {"name": "b", "min_employees": 0}]})


def test_a_segment_field_on_the_lead_wins_over_its_employee_count() -> None:
    row: Any = {"id": "x", "temperature": "hot", "score": 80.0,
                "profile": {"segment": "Enterprise", "employee_count": 5}}
    assert service.lead_facts(row, RuleSet(rules=[])).segment == "enterprise"
    row["profile"] = {"employee_count": 5}
    assert service.lead_facts(row, RuleSet(rules=[])).segment == "smb"
    row["profile"] = {}
    assert service.lead_facts(row).segment is None


@pytest.mark.parametrize(
    ("facts", "rule_id"),
    [
        ({"temperature": "hot", "stage": "mql", "segment": "enterprise"}, "hot-enterprise-mql"),
        ({"temperature": "warm", "stage": "mql", "segment": "enterprise"}, "rest"),
        ({"temperature": "hot", "stage": "lead", "segment": "enterprise"}, "rest"),
        ({"temperature": "hot", "stage": "mql", "segment": "smb"}, "smb"),
        ({"temperature": "hot", "stage": "mql", "segment": None}, "rest"),
    ],
)
def test_rules_test_temperature_stage_and_segment(facts: dict[str, Any], rule_id: str) -> None:
    rules = RuleSet.model_validate({"rules": [
        {"id": "hot-enterprise-mql",
         "when": {"temperature": "hot", "stage": {"in": ["mql", "sql"]}, "segment": "Enterprise"}},
        {"id": "smb", "when": {"segment": ["smb"]}},
        {"id": "rest"},
    ]}).rules
    assert first_match(rules, LeadFacts(id="x", score=80.0, **facts)).id == rule_id


# Segments, routed


async def test_a_lead_goes_to_a_rep_of_its_segment_and_the_decision_says_why(
    router: Router,
) -> None:
    await router.add_team("Sales")
    small = await router.add_person("Sam", teams=["Sales"], segments=["SMB"])
    router.clock.advance(1)
    large = await router.add_person("Eve", teams=["Sales"], segments=["Enterprise", "Mid-Market"])
    router.clock.advance(1)
    german = await router.add_person("Hans", teams=["Sales"], segments=["smb"], languages=["de"])
    await router.set_rules({"id": "all", "pool": "Sales"})

    await router.consume(scored("big", clock=router.clock, employee_count=5000, language="fr"))
    big = await offer_of(router, "big")
    assert big["sdr_id"] == large
    [pool] = big["decision"]["pools"]
    assert pool["excluded"] == {small: ["segment"], german: ["language", "segment"]}

    await router.consume(scored("small", clock=router.clock, employee_count=12, language="fr"))
    tiny = await offer_of(router, "small")
    assert tiny["sdr_id"] == small
    assert tiny["decision"]["pools"][0]["excluded"] == {large: ["segment"], german: ["language"]}

    # No employee count, no segment: nobody is excluded for it.
    await router.consume(scored("unknown", clock=router.clock, language="fr"))
    assert (await offer_of(router, "unknown"))["decision"]["pools"][0]["excluded"] == {
        german: ["language"]}


async def test_a_rule_on_the_segment_with_the_rule_sets_own_bands(router: Router) -> None:
    await router.add_team("Enterprise")
    await router.add_team("Sales")
    corporate = await router.add_person("Cora", teams=["Enterprise"], segments=["corporate"])
    anyone = await router.add_person("Any", teams=["Sales"])
    version = await store_rules(router, {
        "rules": [{"id": "big", "when": {"segment": "corporate"}, "pool": "Enterprise"},
                  {"id": "rest", "pool": "Sales"}],
        "segments": [{"name": "startup", "min_employees": 0},
                     {"name": "corporate", "min_employees": 500}],
    })
    await router.consume(scored("lead-600", clock=router.clock, employee_count=600))
    await router.consume(scored("lead-400", clock=router.clock, employee_count=400))
    first, second = await offer_of(router, "lead-600"), await offer_of(router, "lead-400")
    assert (first["sdr_id"], first["rule_id"], first["rules_version"]) == (
        corporate, "big", version)
    assert (second["sdr_id"], second["rule_id"]) == (anyone, "rest")


async def test_segments_come_in_through_the_yaml_import(router: Router) -> None:
    document = RosterDocument.model_validate(yaml.safe_load("""
        teams: [{name: Inside}]
        people:
          - {name: Ann, email: ann@seller.example, teams: [Inside], segments: [SMB, Mid-Market]}
    """))
    async with router.db.transaction() as session:
        imported = await roster.import_roster(session, router.clock, document,
                                              router.context.channels)
    [ann] = imported.people_created
    assert ann.segments == ["mid-market", "smb"]
    again = RosterDocument.model_validate(yaml.safe_load("""
        people: [{name: Ann, email: ann@seller.example, segments: [Enterprise]}]
    """))
    async with router.db.transaction() as session:
        await roster.import_roster(session, router.clock, again, router.context.channels)
        row = await roster_repository.find_sdr(session, ann.id)
        assert row is not None
        view = await roster.person_view(session, row)
    assert view.segments == ["enterprise"]
    assert roster.rep_of(row).segments == frozenset({"enterprise"})


# Team working hours


async def test_a_rep_without_hours_of_their_own_works_the_teams(router: Router) -> None:
    await router.add_team("Paris", timezone="Europe/Paris", working_hours={"mon": ["11:00-18:00"]})
    inherits = await router.add_person("Ines", teams=["Paris"])
    router.clock.advance(1)
    own = await router.add_person("Otto", teams=["Paris"], timezone="Europe/Paris",
                                  working_hours={"mon": ["08:00-12:00"]})
    await router.set_rules({"id": "all", "pool": "Paris"})
    await router.consume(scored("lead-1", clock=router.clock))  # Monday 10:00 in Paris
    first = await offer_of(router, "lead-1")
    assert first["sdr_id"] == own
    [pool] = first["decision"]["pools"]
    assert pool["excluded"] == {inherits: ["out_of_hours"]}
    assert pool["team_opens_at"] == "2026-01-05T10:00:00+00:00"  # 11:00 in Paris

    router.clock.set(datetime(2026, 1, 5, 10, 0, tzinfo=UTC))  # the team opens
    await router.consume(scored("lead-2", clock=router.clock))
    second = await offer_of(router, "lead-2")
    assert second["sdr_id"] == inherits
    assert "team_opens_at" not in second["decision"]["pools"][0]


async def test_the_hold_stops_the_clock_until_the_teams_next_opening(router: Router) -> None:
    await router.add_team("Paris", timezone="Europe/Paris", working_hours=PARIS_HOURS)
    await router.add_person("Ann", teams=["Paris"])  # no hours of her own
    await router.set_rules({"id": "all", "pool": "Paris", "outside_hours": "hold"})
    await router.consume(scored("lead-1", clock=router.clock))  # Monday 10:00 in Paris
    offer = await offer_of(router, "lead-1")
    # One minute of Monday is left; the other minute runs from Tuesday 09:00 in Paris.
    assert offer["deadline_at"] == datetime(2026, 1, 6, 8, 1, tzinfo=UTC)

    # Outside the team's hours a new lead waits (the hold), offered at the opening.
    router.clock.set(datetime(2026, 1, 5, 20, 0, tzinfo=UTC))
    await router.consume(scored("lead-2", clock=router.clock))
    assert await router.assignments("lead-2") == []
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    router.clock.set(datetime(2026, 1, 6, 8, 0, tzinfo=UTC) - timedelta(seconds=1))
    assert [offer.lead_id for offer in (await timer.tick()).offers] == []
    router.clock.set(datetime(2026, 1, 6, 8, 0, tzinfo=UTC))
    [opened] = (await timer.tick()).offers
    assert opened.lead_id == "lead-2"
    assert opened.deadline_at == router.clock.now() + HOT_ACCEPT


async def test_follow_the_sun_goes_to_a_pool_whose_team_works_now(router: Router) -> None:
    await router.add_team("Sydney", timezone="Australia/Sydney",
                          working_hours={"mon": ["09:00-17:00"]})
    await router.add_team("Tokyo", timezone="Asia/Tokyo", working_hours={"mon": ["09:00-17:00"]})
    await router.add_team("London", timezone="Europe/London",
                          working_hours={"mon": ["08:00-18:00"]})
    asleep = await router.add_person("Sid", teams=["Sydney"])
    await router.add_person("Taro", teams=["Tokyo"])
    awake = await router.add_person("Lou", teams=["London"])
    await router.set_rules({"id": "apac", "pool": "Sydney", "outside_hours": "follow_the_sun",
                            "follow_the_sun": ["Tokyo", "London"]})
    await router.consume(scored("lead-1", clock=router.clock))  # 20:00 Sydney, 18:00 Tokyo
    offer = await offer_of(router, "lead-1")
    assert offer["sdr_id"] == awake
    sydney, tokyo, london = offer["decision"]["pools"]
    assert sydney["excluded"] == {asleep: ["out_of_hours"]}
    assert tokyo["skipped"] == "team closed now"
    assert tokyo["team_opens_at"] == "2026-01-12T00:00:00+00:00"  # next Monday 09:00 Tokyo
    assert london["pool"] == "London" and london["rep_id"] == awake


async def test_follow_the_sun_is_not_used_while_the_pool_is_at_work(router: Router) -> None:
    await router.add_team("Paris", timezone="Europe/Paris", working_hours={"mon": ["09:00-18:00"]})
    await router.add_team("London")
    busy = await router.add_person("Busy", teams=["Paris"], capacity=0)
    await router.add_person("Lou", teams=["London"])
    await router.set_rules({"id": "fr", "pool": "Paris", "outside_hours": "follow_the_sun",
                            "follow_the_sun": ["London"]})
    await router.consume(scored("lead-1", clock=router.clock))
    assert await router.assignments("lead-1") == []
    [waiting] = await router.rows(lead)
    assert waiting["status"] == "waiting"
    async with router.db.reading() as session:
        row = await repository.find_lead(session, "lead-1")
        assert row is not None
        _, routing = await service.decide(session, router.context, row, router.clock.now())
    paris, london = routing.pools
    assert paris["excluded"] == {busy: ["at_capacity"]}
    assert london["skipped"] == "an earlier pool is working now"


async def test_the_shared_queue_waits_for_the_teams_opening(router: Router) -> None:
    settings = router.settings.model_copy(update={"max_reoffers": 0})
    context = service.RouterContext.build(settings, router.context.outbox, router.clock)
    await router.add_person("Boss", role="manager", webhook_url="http://127.0.0.1:9/boss")
    await router.add_team("Paris", manager_email="boss@seller.example", timezone="Europe/Paris",
                          working_hours=PARIS_HOURS)
    await router.add_person("Ann", teams=["Paris"], timezone="Europe/Paris",
                            working_hours={"mon": ["09:00-10:03"]})
    await router.set_rules({"id": "all", "pool": "Paris"})
    await router.consume(scored("lead-1", clock=router.clock))  # Monday 10:00 in Paris
    timer = EscalationTimer(router.db, context, interval=1, batch_size=10)
    router.clock.advance(HOT_ACCEPT)  # 10:02: Ann's offer lapses, the team closed at 10:01
    [escalated] = (await timer.tick()).escalations
    assert escalated.queued_team_id is not None
    tuesday_0900_paris = datetime(2026, 1, 6, 8, 0, tzinfo=UTC)
    [notice] = [row for row in await router.rows(notification) if row["kind"] == "escalation"]
    assert notice["next_attempt_at"] == tuesday_0900_paris
    async with router.db.reading() as session:
        teams = await roster_repository.list_teams(session)
    assert roster.team_hours(teams[0]).next_opening(router.clock.now()) == tuesday_0900_paris
