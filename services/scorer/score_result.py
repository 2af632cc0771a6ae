"""What scoring takes and gives: a lead's `Signal`s in, its `ScoreResult` out, and the
temperature a total makes (`temperature_of`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from pydantic import TypeAdapter

from services.scorer.scoring_model import Thresholds
from shared.events import ScoreLine, Temperature

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Signal:
    """One behavioural event of a lead, as the scorer keeps it."""

    signal_id: str
    signal_type: str
    signal_at: datetime
    url: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    day: float = field(init=False, repr=False, compare=False)
    """`signal_at` in days since the epoch, for decay arithmetic without datetimes."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", self.signal_at.timestamp() / SECONDS_PER_DAY)


class SignalLine(NamedTuple):
    """A signal rule's line, kept plain until a `ScoreLine` is asked for."""

    rule_id: str
    points: float
    raw_points: float
    reason: str
    evidence: list[str]


_SCORE_LINES = TypeAdapter(list[ScoreLine])


@dataclass(frozen=True)
class ScoreResult:
    """A lead's score, split into its parts, with one line per rule that counted.

    `total` is `fit + engagement`. Fit comes from who the lead is; engagement from what it did
    (its signals, and buying signals on the profile). `buying_signal` is True while a buying
    signal keeps the lead hot; `mql` when the model hands the lead to sales. The lines of the
    signal rules become `ScoreLine`s only when `engagement_lines` or `breakdown` is read.
    """

    total: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    fit_lines: tuple[ScoreLine, ...]
    buying_field_lines: tuple[ScoreLine, ...]
    signal_lines: tuple[SignalLine, ...]
    buying_signal: bool
    mql: bool

    @cached_property
    def engagement_lines(self) -> tuple[ScoreLine, ...]:
        signal_lines = _SCORE_LINES.validate_python([line._asdict() for line in self.signal_lines])
        return self.buying_field_lines + tuple(signal_lines)

    @cached_property
    def breakdown(self) -> tuple[ScoreLine, ...]:
        return self.fit_lines + self.engagement_lines

    def breakdown_json(self) -> list[dict[str, Any]]:
        """The breakdown as stored: plain JSON, without building a `ScoreLine` per line."""
        return [
            *(_line_json(line) for line in (*self.fit_lines, *self.buying_field_lines)),
            *({**line._asdict(), "evidence": list(line.evidence)} for line in self.signal_lines),
        ]

    @property
    def contributing_rules(self) -> tuple[str, ...]:
        """The rules that added points: those that made the lead MQL, when it is."""
        lines: tuple[ScoreLine | SignalLine, ...] = (
            *self.fit_lines, *self.buying_field_lines, *self.signal_lines
        )
        return tuple(line.rule_id for line in lines if line.points > 0)


def _line_json(line: ScoreLine) -> dict[str, Any]:
    return {
        "rule_id": line.rule_id,
        "points": line.points,
        "raw_points": line.raw_points,
        "reason": line.reason,
        "evidence": list(line.evidence),
    }


def temperature_of(total: float, *, thresholds: Thresholds, buying_signal: bool) -> Temperature:
    if buying_signal or total >= thresholds.hot:
        return "hot"
    if total >= thresholds.warm:
        return "warm"
    return "cold"


def capped(points: float, cap: float) -> float:
    return max(-cap, min(cap, points))


def rounded(points: float) -> float:
    """Points to the hundredth, as every line and total is kept (-0.0 made 0.0)."""
    return round(points, 2) + 0.0


def summed(points: Iterable[float]) -> float:
    """The exactly rounded sum of `points`, rounded to the hundredth."""
    return rounded(math.fsum(points))
