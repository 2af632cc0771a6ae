"""The rule index finds exactly the fit rules that trying each rule finds, in the same order,
memoised or not; and signal rules are grouped by type in the model's order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scorer.lead_scorer import facts_of
from services.scorer.rule_index import FieldRules, rule_index
from services.scorer.scoring_model import ScoringModel, load_scoring_model
from shared.events import LeadProfile

FIT_RULES: list[dict[str, Any]] = [
    {"field": "industry", "operator": "equals", "value": "Software"},
    {"field": "industry", "operator": "equals", "value": "software", "negate": True},
    {"field": "country", "operator": "in", "values": ["FR", "DE", "fr"]},
    {"field": "country", "operator": "in", "values": ["US"], "negate": True},
    {"field": "employee_count", "operator": "equals", "value": 1},
    {"field": "employee_count", "operator": "in", "values": [50, 200.0]},
    {"field": "employee_count", "operator": "range", "min": 10, "max": 500},
    {"field": "employee_count", "operator": "range", "min": 100, "negate": True},
    {"field": "employee_count", "operator": "range", "max": 50},
    {"field": "demo_requested", "operator": "equals", "value": True},
    {"field": "job_title", "operator": "keywords", "keywords": ["vp", "head"]},
    {"field": "job_title", "operator": "regex", "pattern": "^eng", "negate": True},
    {"field": "email_domain", "operator": "regex", "pattern": r"^gmail\."},
    {"field": "email_domain", "operator": "in", "values": ["rival.example"]},
    {"field": "website", "operator": "missing"},
    {"field": "website", "operator": "missing", "negate": True},
    {"field": "region", "operator": "equals", "value": "europe"},
]
MODEL = ScoringModel.model_validate({
    "version": "index-test",
    "thresholds": {"warm": 30, "hot": 60},
    "regions": {"europe": ["FR", "DE"]},
    "fit_rules": [{"id": f"rule-{number}", "points": number - 5, **rule}
                  for number, rule in enumerate(FIT_RULES)],
})

profiles = st.builds(
    LeadProfile,
    email=st.sampled_from(["ada@acme.io", "kid@gmail.com", "bob@rival.example", "x@GMAIL.com"]),
    country=st.sampled_from([None, "FR", "fr", "US", "DE", "JP"]),
    industry=st.sampled_from([None, "Software", "SOFTWARE", "Retail", ""]),
    employee_count=st.one_of(st.none(), st.sampled_from([0, 1, 50, 200, 499, 501])),
    job_title=st.sampled_from([None, "VP Sales", "Head of IT", "Engineer", "vpn admin"]),
    website=st.sampled_from([None, "", "  ", "acme.io"]),
    demo_requested=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(profile=profiles)
def test_the_index_finds_what_trying_every_rule_finds(profile: LeadProfile) -> None:
    facts = facts_of(profile, MODEL)
    expected = tuple(rule.line for rule in MODEL.fit_rules if rule.applies_to(facts))
    index = FieldRules(MODEL.fit_rules)

    assert index.lines(facts) == expected
    assert index.lines(facts) == expected  # memoised
    assert index.lines_and_total(facts)[1] == round(sum(line.points for line in expected), 2)


def test_true_and_one_are_told_apart_even_when_memoised() -> None:
    index = FieldRules(MODEL.fit_rules)
    numeric = facts_of(LeadProfile(email="a@b.io", employee_count=1), MODEL)
    assert "rule-4" in [line.rule_id for line in index.lines(numeric)]
    flagged = {**numeric, "employee_count": True}
    assert "rule-4" not in [line.rule_id for line in index.lines(flagged)]


def test_signal_rules_are_grouped_by_type_in_the_model_order() -> None:
    model = load_scoring_model()
    index = rule_index(model)
    for signal_type in {rule.signal_type for rule in model.signal_rules}:
        grouped = index.signal_rules(signal_type)
        assert [rule for _, rule in grouped] == [
            rule for rule in model.signal_rules if rule.signal_type == signal_type
        ]
        assert all(model.signal_rules[position] is rule for position, rule in grouped)
    assert index.signal_rules("custom:never-seen") == ()
    assert rule_index(model) is index
