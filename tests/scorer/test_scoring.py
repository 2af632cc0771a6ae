"""`score()` as a pure function: each operator, buying signals, thresholds, the default model."""

from __future__ import annotations

from typing import Any

import pytest

from services.scorer.scoring import score
from services.scorer.scoring_model import ScoringModel, load_scoring_model
from shared.events import LeadProfile

THRESHOLDS = {"warm": 30, "hot": 60}


def model_with(
    *fit_rules: dict[str, Any], buying_signals: tuple[dict[str, Any], ...] = ()
) -> ScoringModel:
    return ScoringModel.model_validate(
        {
            "version": "test-1",
            "thresholds": THRESHOLDS,
            "fit_rules": list(fit_rules),
            "buying_signals": list(buying_signals),
        }
    )


def lead(**fields: Any) -> LeadProfile:
    return LeadProfile.model_validate({"email": "ada@example.com", **fields})


def rule(operator: str, field: str, **options: Any) -> dict[str, Any]:
    return {"id": "the-rule", "field": field, "operator": operator, "points": 10, **options}


@pytest.mark.parametrize(
    ("the_rule", "fields", "matches"),
    [
        (rule("equals", "source", value="LinkedIn"), {"source": "linkedin"}, True),
        (rule("equals", "source", value="LinkedIn"), {"source": "website"}, False),
        (rule("equals", "source", value="LinkedIn"), {}, False),
        (rule("equals", "demo_requested", value=True), {"demo_requested": True}, True),
        (rule("equals", "demo_requested", value=True), {"demo_requested": False}, False),
        (rule("equals", "demo_requested", value=1), {"demo_requested": True}, False),
        (rule("equals", "employee_count", value=10), {"employee_count": 10}, True),
        (rule("in", "country", values=["FR", "DE"]), {"country": "DE"}, True),
        (rule("in", "country", values=["FR", "DE"]), {"country": "US"}, False),
        (rule("in", "country", values=["FR", "DE"]), {}, False),
        (rule("range", "employee_count", min=50, max=199), {"employee_count": 50}, True),
        (rule("range", "employee_count", min=50, max=199), {"employee_count": 199}, True),
        (rule("range", "employee_count", min=50, max=199), {"employee_count": 49}, False),
        (rule("range", "employee_count", min=50, max=199), {"employee_count": 200}, False),
        (rule("range", "employee_count", min=50, max=199), {}, False),
        (rule("range", "employee_count", min=200), {"employee_count": 90_000}, True),
        (rule("range", "employee_count", max=10), {"employee_count": 0}, True),
        (rule("range", "company", min=0), {"company": "12"}, False),
        (rule("missing", "company"), {}, True),
        (rule("missing", "company"), {"company": "  "}, True),
        (rule("missing", "company"), {"company": "Acme"}, False),
        (rule("regex", "job_title", pattern=r"\bhead\b"), {"job_title": "Head of Sales"}, True),
        (rule("regex", "job_title", pattern=r"\bhead\b"), {"job_title": "Headhunter"}, False),
        (rule("regex", "job_title", pattern=r"\bhead\b"), {}, False),
    ],
)
def test_operators(the_rule: dict[str, Any], fields: dict[str, Any], matches: bool) -> None:
    result = score(lead(**fields), model_with(the_rule))
    assert [line.rule_id for line in result.breakdown] == (["the-rule"] if matches else [])
    assert result.fit == (10 if matches else 0)


def test_buying_signal_makes_a_lead_hot_whatever_its_total() -> None:
    model = model_with(
        rule("missing", "company", points=-50),
        buying_signals=({"id": "demo", "field": "demo_requested", "operator": "equals",
                         "value": True, "points": 30, "reason": "Asked for a demo"},),
    )
    asked = score(lead(demo_requested=True), model)
    did_not_ask = score(lead(), model)
    assert (asked.total, asked.fit, asked.engagement, asked.temperature) == (-20, -50, 30, "hot")
    assert [line.rule_id for line in asked.engagement_lines] == ["demo"]
    assert [line.rule_id for line in asked.breakdown] == ["the-rule", "demo"]
    assert did_not_ask.temperature == "cold"
    assert did_not_ask.engagement == 0


@pytest.mark.parametrize(
    ("points", "temperature"), [(29, "cold"), (30, "warm"), (59.5, "warm"), (60, "hot")]
)
def test_thresholds_are_inclusive(points: float, temperature: str) -> None:
    result = score(lead(), model_with(rule("missing", "company", points=points)))
    assert result.total == points
    assert result.temperature == temperature


def test_negative_points_lower_the_score_and_explain_why() -> None:
    model = model_with(
        rule("missing", "company", id="no-company", points=-10, reason="No company given"),
        rule("in", "country", id="target", values=["FR"], points=5),
    )
    result = score(lead(country="FR"), model)
    assert result.total == -5
    assert [(line.rule_id, line.points, line.reason) for line in result.breakdown] == [
        ("no-company", -10, "No company given"),
        ("target", 5, "country is one of FR"),
    ]
    assert result.model_version == "test-1"


def test_default_model_ranks_a_good_fit_above_a_poor_one() -> None:
    model = load_scoring_model()
    good = score(
        lead(company="Acme", country="FR", employee_count=250, job_title="Head of Sales",
             account_key="example.com"),
        model,
    )
    poor = score(lead(email="kid@gmail.com", job_title="Student"), model)
    demo = score(lead(email="kid@gmail.com", demo_requested=True), model)
    assert (good.total, good.temperature) == (45, "warm")
    assert (poor.total, poor.temperature) == (-40, "cold")
    assert (demo.engagement, demo.temperature) == (30, "hot")
