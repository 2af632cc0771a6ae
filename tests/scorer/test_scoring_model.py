"""The scoring model document: validation errors a person can act on, loading from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.scorer.app import create_app
from services.scorer.scoring_model import (
    RangeRule,
    ScoringModel,
    ScoringModelError,
    Thresholds,
    load_scoring_model,
)
from services.scorer.settings import ScorerSettings

VALID_RULE = {"id": "size", "field": "employee_count", "operator": "range", "min": 50,
              "points": 10}


def document(**overrides: Any) -> dict[str, Any]:
    return {"version": "v1", "thresholds": {"warm": 30, "hot": 60}, "fit_rules": [VALID_RULE],
            **overrides}


def errors_of(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as raised:
        ScoringModel.model_validate(doc)
    return str(raised.value)


def test_a_valid_document_is_accepted() -> None:
    model = ScoringModel.model_validate(document(version=3))
    assert model.version == "3"
    assert isinstance(model.fit_rules[0], RangeRule)


@pytest.mark.parametrize(
    ("bad_rule", "message"),
    [
        ({**VALID_RULE, "operator": "gt"},
         "does not match any of the expected tags: 'equals', 'in', 'range', 'missing', 'regex',"
         " 'keywords'"),
        ({k: v for k, v in VALID_RULE.items() if k != "operator"}, "discriminator 'operator'"),
        ({k: v for k, v in VALID_RULE.items() if k != "points"}, "points\n  Field required"),
        ({k: v for k, v in VALID_RULE.items() if k != "id"}, "id\n  Field required"),
        ({**VALID_RULE, "field": "budget"}, "unknown lead field 'budget'"),
        ({**VALID_RULE, "pionts": 3}, "Extra inputs are not permitted"),
        ({**VALID_RULE, "min": None}, "a range rule needs `min`, `max` or both"),
        ({**VALID_RULE, "max": 10}, "range min (50) is above max (10)"),
        ({**VALID_RULE, "points": "lots"}, "valid number"),
        ({**VALID_RULE, "operator": "regex", "pattern": "(unclosed"},
         "invalid regular expression"),
        ({**VALID_RULE, "operator": "in", "values": []}, "at least 1 item"),
        ({**VALID_RULE, "id": "Has Spaces"}, "should match pattern"),
    ],
)
def test_bad_rules_are_rejected_with_a_clear_message(
    bad_rule: dict[str, Any], message: str
) -> None:
    assert message in errors_of(document(fit_rules=[bad_rule]))


def test_model_level_mistakes_are_rejected() -> None:
    assert "repeated: size" in errors_of(document(buying_signals=[VALID_RULE]))
    assert "warm threshold (70) is above hot (60)" in errors_of(
        document(thresholds={"warm": 70, "hot": 60})
    )
    assert "thresholds\n  Field required" in errors_of(
        {key: value for key, value in document().items() if key != "thresholds"}
    )


def test_default_model_ships_with_the_package() -> None:
    model = load_scoring_model()
    assert model.version == "default-2"
    assert [signal.id for signal in model.buying_signals] == [
        "demo-requested", "demo-request", "quote-request", "pricing-form"
    ]
    assert {"company-size-mid", "company-size-large", "target-country", "company-missing",
            "personal-email", "student-or-intern", "outside-territory"} <= {
        rule.id for rule in model.fit_rules
    }
    points = {rule.signal_type: rule.points for rule in model.signal_rules if not rule.url}
    assert (points["email_open"], points["content_download"], points["demo_request"],
            points["quote_request"]) == (10, 20, 30, 30)
    assert points["unsubscribe"] < 0 and points["email_bounce"] < 0
    assert model.region_of("NO") == "europe"  # quoted in the YAML: a bare NO reads as false


SIGNAL_RULE = {"id": "opens", "signal_type": "email_open", "points": 10}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"engagement_rules": [{**SIGNAL_RULE, "cap": 0}]}, "greater than 0"),
        ({"engagement_rules": [{**SIGNAL_RULE, "half_life_days": -1}]}, "greater than 0"),
        ({"engagement_rules": [{**SIGNAL_RULE, "url": "("}]}, "invalid regular expression"),
        ({"engagement_rules": [{**SIGNAL_RULE, "signal_type": "Email Open"}]},
         "should match pattern"),
        ({"engagement_rules": [{**SIGNAL_RULE, "hot_for_days": 3}]},
         "`hot_for_days` belongs to buying signals"),
        ({"engagement_rules": [{**SIGNAL_RULE, "operator": "equals"}]},
         "Extra inputs are not permitted"),
        ({"buying_signals": [{**SIGNAL_RULE, "hot_for_days": 0}]}, "greater than 0"),
        ({"buying_signals": [{"id": "x", "field": "demo_requested", "points": 1}]},
         "discriminator 'operator'"),
        ({"engagement_rules": [{**SIGNAL_RULE, "id": "size"}]}, "repeated: size"),
        ({"mql": {"min_fit": 10}}, "mql.min_total\n  Field required"),
        ({"regions": {"europe": ["FRA"]}}, "should match pattern"),
        ({"regions": {"a": ["FR"], "b": ["fr"]}}, "a country belongs to one region only"),
        ({"regions": {"other": ["FR"]}}, "'other' is the region of countries listed in no"),
        ({"fit_rules": [{**VALID_RULE, "operator": "keywords", "keywords": []}]},
         "at least 1 item"),
    ],
)
def test_bad_engagement_buying_and_band_settings_are_rejected(
    overrides: dict[str, Any], message: str
) -> None:
    assert message in errors_of(document(**overrides))


def test_a_document_round_trips_through_its_plain_form() -> None:
    model = load_scoring_model()
    assert ScoringModel.model_validate(model.document()) == model


def test_a_model_file_overrides_the_default(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("version: custom-7\nthresholds: {warm: 1, hot: 2}\n", encoding="utf-8")
    assert load_scoring_model(path) == ScoringModel(
        version="custom-7", thresholds=Thresholds(warm=1, hot=2)
    )


def test_unreadable_or_invalid_files_name_the_file(tmp_path: Path) -> None:
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("version: x\nthresholds: {warm: 1}\n", encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScoringModelError, match=r"invalid scoring model .*invalid\.yaml"):
        load_scoring_model(invalid)
    with pytest.raises(ScoringModelError, match=r"cannot read scoring model .*broken\.yaml"):
        load_scoring_model(broken)
    with pytest.raises(ScoringModelError, match=r"cannot read scoring model .*absent\.yaml"):
        load_scoring_model(tmp_path / "absent.yaml")


def test_the_app_refuses_to_start_with_an_invalid_model(tmp_path: Path) -> None:
    settings = ScorerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'scorer.db'}",
        scoring_model_path=tmp_path / "absent.yaml",
    )
    with pytest.raises(ScoringModelError):
        create_app(settings)
