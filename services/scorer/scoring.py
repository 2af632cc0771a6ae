"""`score()`: a lead profile and a scoring model in, a score out. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from services.scorer.scoring_model import Rule, ScoringModel, Thresholds
from shared.events import LeadProfile, ScoreLine, Temperature


@dataclass(frozen=True)
class ScoreResult:
    """A lead's score, split into its parts, with one line per rule that matched.

    `total` is `fit + engagement`. Fit comes from who the lead is; engagement from what it did
    (today only buying signals, which also make the lead hot whatever its total).
    """

    total: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    fit_lines: tuple[ScoreLine, ...]
    engagement_lines: tuple[ScoreLine, ...]

    @property
    def breakdown(self) -> tuple[ScoreLine, ...]:
        return self.fit_lines + self.engagement_lines


def score(profile: LeadProfile, model: ScoringModel) -> ScoreResult:
    fit_lines = _matching_lines(model.fit_rules, profile)
    engagement_lines = _matching_lines(model.buying_signals, profile)
    fit = math.fsum(line.points for line in fit_lines)
    engagement = math.fsum(line.points for line in engagement_lines)
    total = fit + engagement
    return ScoreResult(
        total=total,
        fit=fit,
        engagement=engagement,
        temperature=temperature_of(
            total, thresholds=model.thresholds, buying_signal=bool(engagement_lines)
        ),
        model_version=model.version,
        fit_lines=fit_lines,
        engagement_lines=engagement_lines,
    )


def temperature_of(total: float, *, thresholds: Thresholds, buying_signal: bool) -> Temperature:
    if buying_signal or total >= thresholds.hot:
        return "hot"
    if total >= thresholds.warm:
        return "warm"
    return "cold"


def _matching_lines(rules: Iterable[Rule], profile: LeadProfile) -> tuple[ScoreLine, ...]:
    return tuple(
        ScoreLine(rule_id=rule.id, points=rule.points, reason=rule.explanation)
        for rule in rules
        if rule.applies_to(profile)
    )
