"""Routing decisions in plain words: the lead's value against the rep's, out-of-office ends,
next working hours, capacity figures, labelled strategy figures, people named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.router.explanations import (
    WORDED_REPS,
    describe_decision,
    exclusion_text,
    explain_pool,
    figure_text,
)
from services.router.routing import LeadFacts, Period, Rep, choose_rep, parse_working_hours
from tests.router.conftest import Router, scored

NOW = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)  # a Saturday
LEAD = LeadFacts(id="lead", temperature="hot", score=90, language="fr", country="FR",
                 segment="enterprise")


def rep(**fields: object) -> Rep:
    return Rep(id="r", created_at=NOW - timedelta(days=30), **fields)  # type: ignore[arg-type]


def test_each_exclusion_compares_the_leads_value_with_the_reps() -> None:
    assert exclusion_text("language", rep(languages=frozenset({"de"})), LEAD, NOW) == (
        "lead speaks fr; rep speaks de")
    assert exclusion_text("territory", rep(territories=frozenset({"DE", "AT"})), LEAD, NOW) == (
        "lead is in FR; rep covers AT, DE")
    assert exclusion_text("segment", rep(segments=frozenset({"smb"})), LEAD, NOW) == (
        "lead is enterprise; rep takes smb")
    assert exclusion_text("at_capacity", rep(capacity=5, open_assignments=5), LEAD, NOW) == (
        "at capacity 5/5")
    away = rep(out_of_office=(Period(NOW - timedelta(days=2), datetime(2026, 12, 12, 18,
                                                                        tzinfo=UTC)),))
    assert exclusion_text("out_of_office", away, LEAD, NOW) == "out of office until 12 Dec"
    office = rep(timezone="Europe/Paris",
                 working_hours=parse_working_hours({"mon": ["09:00-18:00"]}))
    assert exclusion_text("out_of_hours", office, LEAD, NOW) == (
        "outside hours; back Mon 09:00 Europe/Paris")


def test_strategy_figures_are_labelled() -> None:
    assert figure_text("weighted_fairness", rep(), 1.25, NOW) == "1.25 leads below target share"
    assert figure_text("weighted_fairness", rep(), -0.5, NOW) == "0.50 leads above target share"
    assert figure_text("least_loaded", rep(capacity=5, open_assignments=2), 0.4, NOW) == (
        "load 2/5 open")
    assert figure_text("round_robin", rep(), None, NOW) == "never assigned a lead yet"
    assert figure_text("round_robin", rep(last_assigned_at=NOW - timedelta(minutes=12)), None,
                       NOW) == "last lead 12 min ago"


def test_an_older_decision_is_described_with_names() -> None:
    stored = {"pools": [{"pool": "Inside", "excluded": {"b": ["presence_away"]}}]}
    assert describe_decision(stored, {"b": "Ben"}) == ["Inside · Ben: away"]


async def test_the_stored_decision_names_reps_and_says_why_in_words(router: Router) -> None:
    await router.add_team("Sales")
    ann = await router.add_person("Ann", teams=["Sales"], languages=["fr", "en"])
    await router.add_person("Ben", teams=["Sales"], languages=["de"])
    await router.add_person("Cat", teams=["Sales"], capacity=0)
    await router.set_rules({"id": "sales", "pool": "Sales", "strategy": "least_loaded"})
    await router.consume(scored("lead-1", clock=router.clock, language="fr"))
    [offer] = await router.assignments("lead-1")
    decision = offer["decision"]
    assert offer["sdr_id"] == ann
    assert decision["summary"] == (
        "Ann got the lead by rule sales (least loaded: least loaded; load 0 open, "
        "no capacity limit).")
    lines = describe_decision(decision, {})
    assert "Sales · Ben: lead speaks fr; rep speaks de" in lines
    assert "Sales · Cat: at capacity 0/0" in lines


def test_a_large_pool_is_worded_up_to_a_bound_and_the_rest_counted() -> None:
    reps = [Rep(id=f"r{number:02d}", created_at=NOW, presence="away") for number in range(30)]
    reps.append(Rep(id="chosen", created_at=NOW))
    decision = choose_rep(reps, LEAD, "round_robin", NOW)
    explained = explain_pool(decision, reps, LEAD, NOW, {"chosen": "Ann"})
    assert len(explained["excluded"]) == WORDED_REPS
    assert f"{30 - WORDED_REPS} more excluded: away {30 - WORDED_REPS}" in explained["lines"]
    assert explained["figures"] == {"chosen": "never assigned a lead yet"}
