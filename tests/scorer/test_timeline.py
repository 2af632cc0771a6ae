"""Where a quiet lead falls to the band below: the closed form (one half-life, nothing fading
below zero) against exact scoring, on many leads, and the probes it saves."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.scorer.lead_scorer import LeadScorer
from services.scorer.score_result import Signal
from services.scorer.scoring import next_change_of, score
from services.scorer.scoring_model import ScoringModel
from services.scorer.signal_tally import tally_of
from services.scorer.timeline import Timeline
from shared.events import LeadProfile, Temperature

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROFILE = LeadProfile(email="ada@acme.io", company="Acme", employee_count=120)


def model(half_lives: tuple[float, float]) -> ScoringModel:
    """Opens capped at 30, downloads uncapped, a demo request hot for 3 days; fit 20."""
    opens, downloads = half_lives
    return ScoringModel.model_validate({
        "version": "timeline-1",
        "thresholds": {"warm": 30, "hot": 60},
        "fit_rules": [{"id": "company", "field": "company", "operator": "equals",
                       "value": "Acme", "points": 20}],
        "engagement_rules": [
            {"id": "opens", "signal_type": "email_open", "points": 10, "repeatable": True,
             "cap": 30, "half_life_days": opens},
            {"id": "downloads", "signal_type": "content_download", "points": 7,
             "repeatable": True, "half_life_days": downloads},
        ],
        "buying_signals": [{"id": "demo", "signal_type": "demo_request", "points": 15,
                            "half_life_days": opens, "hot_for_days": 3}],
    })


def random_history(rng: random.Random) -> list[Signal]:
    signals = []
    for number in range(rng.randint(1, 12)):
        kind = rng.choice(["email_open"] * 4 + ["content_download"] * 2 + ["demo_request"])
        signals.append(Signal(f"s{number}", kind, NOW - timedelta(days=rng.uniform(0, 20))))
    return signals


def checked(scorer: LeadScorer, history: list[Signal], found: datetime | None,
            the_model: ScoringModel) -> None:
    """`found` is a moment the band has changed at, and it had not a tolerance before (a
    thousandth of the wait searched, which the doubling steps make up to twice the wait and
    an hour)."""
    current = score(PROFILE, history, the_model, NOW).temperature
    if found is None:
        assert current == "cold" or score(PROFILE, history, the_model,
                                          NOW + timedelta(days=400)).temperature == current
        return
    tolerance = max(timedelta(minutes=1), (2 * (found - NOW) + timedelta(hours=1)) / 1000)
    assert score(PROFILE, history, the_model, found).temperature != current
    assert score(PROFILE, history, the_model, found - tolerance).temperature == current


@pytest.mark.parametrize("half_lives", [(14.0, 14.0), (14.0, 30.0)])
def test_the_fall_is_found_within_tolerance_whichever_way(half_lives: tuple[float, float]
                                                          ) -> None:
    the_model = model(half_lives)
    rng = random.Random(11)
    windows = 0
    for _ in range(400):
        history = random_history(rng)
        scorer = LeadScorer(PROFILE, tally_of(history, the_model), the_model)
        current = scorer.at(NOW).temperature
        windows += next(Timeline(scorer, NOW).fall_windows(current), None) is not None
        checked(scorer, history, next_change_of(scorer, NOW, current=current), the_model)
    # One half-life: most leads that are not cold get the closed form (352 of 400); two: only
    # those whose signals all share one of them (51).
    assert windows > (300 if half_lives[0] == half_lives[1] else 30)


@pytest.mark.parametrize(("downloads", "band", "most_probes"), [
    (0, "warm", 4),  # one fading line: now, the settled moment, the narrow pair
    (2, "hot", 8),  # two: the wide pair, and a few halvings of it
])
def test_the_closed_form_saves_the_search(
    monkeypatch: pytest.MonkeyPatch, downloads: int, band: Temperature, most_probes: int
) -> None:
    the_model = model((14.0, 14.0))
    history = [Signal(f"open-{day}", "email_open", NOW - timedelta(days=day))
               for day in range(5)] + [Signal(f"download-{number}", "content_download", NOW)
                                       for number in range(downloads)]
    scorer = LeadScorer(PROFILE, tally_of(history, the_model), the_model)
    assert scorer.at(NOW).temperature == band
    probes = 0
    real = Timeline.__call__

    def counted(self: Timeline, moment: datetime) -> Temperature:
        nonlocal probes
        probes += 1
        return real(self, moment)

    monkeypatch.setattr(Timeline, "__call__", counted)
    found = next_change_of(scorer, NOW, current=band)
    checked(scorer, history, found, the_model)
    assert probes <= most_probes
    probes = 0
    monkeypatch.setattr(Timeline, "fall_windows", lambda self, current: [])
    searched = next_change_of(scorer, NOW, current=band)
    assert found is not None and searched is not None
    # The search stops within a thousandth of its last doubling step: the closed form is as
    # early or earlier, never before the fall (`checked`).
    assert timedelta(0) <= searched - found <= (2 * (searched - NOW) + timedelta(hours=1)) / 1000
    assert probes >= 14
