"""`score()`: a lead, its signals, a scoring model and a moment in, a score out.

Pure: no I/O, and `now` is an argument, so the same inputs always give the same score (a replay
of a lead's whole history included). Signals are deduplicated by id, so a redelivered signal
never counts twice. A signal's points fade by half every `half_life_days` of its rule; points
are rounded to the hundredth, per line and in total, so that a score read back from storage
compares equal to a fresh one.

`next_change_at()` says when the temperature of a quiet lead will change by decay alone, so
that the sweep looks at each lead once per band crossing instead of rescoring everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.scorer.scoring_model import (
    BuyingSignalRule,
    FieldRule,
    ScoringModel,
    SignalRule,
    Thresholds,
)
from shared.events import LeadProfile, ScoreLine, Temperature

EVIDENCE_LIMIT = 50
"""At most this many signal ids are quoted as a line's evidence (the most recent ones)."""
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


@dataclass(frozen=True)
class ScoreResult:
    """A lead's score, split into its parts, with one line per rule that counted.

    `total` is `fit + engagement`. Fit comes from who the lead is; engagement from what it did
    (its signals, and buying signals on the profile). `buying_signal` is True while a buying
    signal keeps the lead hot; `mql` when the model hands the lead to sales.
    """

    total: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    fit_lines: tuple[ScoreLine, ...]
    engagement_lines: tuple[ScoreLine, ...]
    buying_signal: bool
    mql: bool

    @property
    def breakdown(self) -> tuple[ScoreLine, ...]:
        return self.fit_lines + self.engagement_lines

    @property
    def contributing_rules(self) -> tuple[str, ...]:
        """The rules that added points: those that made the lead MQL, when it is."""
        return tuple(line.rule_id for line in self.breakdown if line.points > 0)


def facts_of(profile: LeadProfile, model: ScoringModel) -> dict[str, object]:
    """The values fit rules look at: the profile's fields plus `email_domain` and `region`."""
    facts: dict[str, object] = dict(profile)
    email = profile.email
    facts["email_domain"] = email.rpartition("@")[2].lower() if "@" in email else None
    facts["region"] = model.region_of(profile.country)
    return facts


def score(
    profile: LeadProfile,
    signals: Iterable[Signal],
    model: ScoringModel,
    now: datetime,
) -> ScoreResult:
    return _Scorer(profile, signals, model).at(now)


def score_and_next_change(
    profile: LeadProfile,
    signals: Iterable[Signal],
    model: ScoringModel,
    now: datetime,
) -> tuple[ScoreResult, datetime | None]:
    """`score()` and `next_change_at()` at once, sharing the work that does not depend on time."""
    scorer = _Scorer(profile, signals, model)
    return scorer.at(now), _next_change(scorer, now)


def temperature_of(total: float, *, thresholds: Thresholds, buying_signal: bool) -> Temperature:
    if buying_signal or total >= thresholds.hot:
        return "hot"
    if total >= thresholds.warm:
        return "warm"
    return "cold"


def decayed(points: float, age: timedelta, half_life_days: float | None) -> float:
    """`points` after `age`: halved every half-life (a signal from the future has age 0)."""
    if half_life_days is None:
        return points
    age_days = max(age.total_seconds(), 0.0) / SECONDS_PER_DAY
    return float(points * 0.5 ** (age_days / half_life_days))


def next_change_at(
    profile: LeadProfile,
    signals: Iterable[Signal],
    model: ScoringModel,
    now: datetime,
    *,
    horizon: timedelta = timedelta(days=400),
    precision: timedelta = timedelta(minutes=1),
) -> datetime | None:
    """The first moment after `now` at which decay alone changes the lead's temperature.

    None when nothing about the lead fades. Found by probing at doubling steps from one hour,
    then bisecting the first step that changed, down to `precision` or a thousandth of the
    wait, whichever is longer; the moment returned is one at which the new temperature already
    holds (at most that late). When no change shows within `horizon`, the horizon itself is
    returned, so the lead is looked at again then. A change that reverts between two probes
    (a negative signal fading while a positive one fades too) may be missed; the next event
    about the lead corrects it.
    """
    return _next_change(
        _Scorer(profile, signals, model), now, horizon=horizon, precision=precision
    )


def _next_change(
    scorer: _Scorer,
    now: datetime,
    *,
    horizon: timedelta = timedelta(days=400),
    precision: timedelta = timedelta(minutes=1),
) -> datetime | None:
    if not scorer.fades:
        return None
    temperature = scorer.timeline(now)
    current = temperature(now)

    def changed(moment: datetime) -> bool:
        return temperature(moment) != current

    step = timedelta(hours=1)
    before, probe = now, now + step
    end = now + horizon
    settled = scorer.settled_at(now)
    if settled is not None:
        # Nothing that fades takes points away: the temperature can only fall, and is final
        # once every fading point rounds to nothing.
        if current == "cold" or not changed(settled):
            return None
        end = min(end, settled)
    while probe < end and not changed(probe):
        before, step = probe, step * 2
        probe = before + step
    if probe >= end:
        probe = end
        if not changed(end):
            return end
    after = probe
    tolerance = max(precision, (after - now) / 1000)
    while after - before > tolerance:
        middle = before + (after - before) / 2
        if changed(middle):
            after = middle
        else:
            before = middle
    return after


class _Scorer:
    """One lead against one model: what does not depend on time is worked out once."""

    def __init__(self, profile: LeadProfile, signals: Iterable[Signal], model: ScoringModel):
        self.model = model
        facts = facts_of(profile, model)
        self.fit_lines = _field_lines(model.fit_rules, facts)
        self.fit = _sum(line.points for line in self.fit_lines)
        self.buying_field_lines = _field_lines(model.buying_field_rules, facts)
        by_type = _by_type(signals)
        self.matches: list[tuple[SignalRule, list[Signal]]] = []
        for rule in model.signal_rules:
            matching = [s for s in by_type.get(rule.signal_type, ()) if rule.accepts(s.url)]
            if matching:
                self.matches.append((rule, matching))
        self.fades = any(
            rule.half_life_days is not None
            or (isinstance(rule, BuyingSignalRule) and rule.hot_for_days is not None)
            for rule, _ in self.matches
        )

    def at(self, now: datetime) -> ScoreResult:
        signal_lines = tuple(_signal_line(rule, matching, now) for rule, matching in self.matches)
        engagement_lines = self.buying_field_lines + signal_lines
        engagement = _sum(line.points for line in engagement_lines)
        total = _round(self.fit + engagement)
        buying_signal = self._buying_signal(now)
        mql = self.model.mql
        return ScoreResult(
            total=total,
            fit=self.fit,
            engagement=engagement,
            temperature=temperature_of(
                total, thresholds=self.model.thresholds, buying_signal=buying_signal
            ),
            model_version=self.model.version,
            fit_lines=self.fit_lines,
            engagement_lines=engagement_lines,
            buying_signal=buying_signal,
            mql=buying_signal or (mql is not None and mql.met(fit=self.fit, total=total)),
        )

    def settled_at(self, origin: datetime) -> datetime | None:
        """When every fading point will have faded to nothing and every buying window closed, if
        none of the fading rules takes points away (then the temperature only ever falls);
        None when one does."""
        latest = origin
        for rule, matching in self.matches:
            at_origin = _signal_points(rule, matching, origin, capped=False)
            if at_origin < 0 and rule.half_life_days is not None:
                return None
            if rule.half_life_days is not None and at_origin > 0:
                halvings = math.log2(max(at_origin, 1.0) / 0.004)
                latest = max(latest, origin + timedelta(days=rule.half_life_days * halvings))
            if isinstance(rule, BuyingSignalRule) and rule.hot_for_days is not None:
                latest = max(latest, matching[0].signal_at + timedelta(days=rule.hot_for_days))
        return latest + timedelta(seconds=1)

    def timeline(self, origin: datetime) -> Callable[[datetime], Temperature]:
        """The temperature at any moment from `origin` on, cheaply, without the breakdown.

        A rule's decayed points at `origin + d` are its points at `origin` halved every
        half-life of `d`, so each rule costs one power per moment instead of one per signal.
        (A signal dated after `origin` breaks that shortcut: the exact sum is used then.)
        """
        fixed = [line.points for line in self.buying_field_lines]
        exact = any(s.signal_at > origin for _, matching in self.matches for s in matching)
        terms = [
            (_signal_points(rule, matching, origin, capped=False), rule.half_life_days, rule.cap)
            for rule, matching in self.matches
        ]
        hot_for_good = bool(fixed) or any(
            isinstance(rule, BuyingSignalRule) and rule.hot_for_days is None
            for rule, _ in self.matches
        )
        hot_until = max(
            (
                matching[0].signal_at + timedelta(days=rule.hot_for_days)
                for rule, matching in self.matches
                if isinstance(rule, BuyingSignalRule) and rule.hot_for_days is not None
            ),
            default=None,
        )
        thresholds = self.model.thresholds

        def temperature(moment: datetime) -> Temperature:
            if exact:
                return self.at(moment).temperature
            elapsed_days = (moment - origin).total_seconds() / SECONDS_PER_DAY
            points = list(fixed)
            for at_origin, half_life_days, cap in terms:
                value = at_origin
                if half_life_days is not None:
                    value *= 0.5 ** (elapsed_days / half_life_days)
                if cap is not None:
                    value = _capped(value, cap)
                points.append(_round(value))
            buying_signal = hot_for_good or (hot_until is not None and moment < hot_until)
            total = _round(self.fit + _sum(points))
            return temperature_of(total, thresholds=thresholds, buying_signal=buying_signal)

        return temperature

    def _buying_signal(self, now: datetime) -> bool:
        return bool(self.buying_field_lines) or any(
            _keeps_hot(rule, matching, now) for rule, matching in self.matches
        )


def _field_lines(
    rules: Iterable[FieldRule], facts: Mapping[str, object]
) -> tuple[ScoreLine, ...]:
    return tuple(rule.line for rule in rules if rule.applies_to(facts))


def _by_type(signals: Iterable[Signal]) -> dict[str, list[Signal]]:
    """Signals grouped by type, each group newest first; a repeated id counts once."""
    unique = {signal.signal_id: signal for signal in signals}
    by_type: dict[str, list[Signal]] = {}
    for signal in unique.values():
        by_type.setdefault(signal.signal_type, []).append(signal)
    for group in by_type.values():
        group.sort(key=lambda signal: (signal.signal_at, signal.signal_id), reverse=True)
    return by_type


def _signal_points(
    rule: SignalRule, newest_first: Sequence[Signal], now: datetime, *, capped: bool = True
) -> float:
    counted = newest_first if rule.repeatable else newest_first[:1]
    if rule.half_life_days is None:
        faded = rule.points * len(counted)
    else:
        # `decayed()` for each signal, with the datetimes taken out of the loop.
        today, half_life = now.timestamp() / SECONDS_PER_DAY, rule.half_life_days
        faded = rule.points * math.fsum(
            0.5 ** (max(today - signal.day, 0.0) / half_life) for signal in counted
        )
    return faded if rule.cap is None or not capped else _capped(faded, rule.cap)


def _signal_line(rule: SignalRule, newest_first: Sequence[Signal], now: datetime) -> ScoreLine:
    counted = newest_first if rule.repeatable else newest_first[:1]
    raw = rule.points * len(counted)
    if rule.cap is not None:
        raw = _capped(raw, rule.cap)
    if len(counted) > EVIDENCE_LIMIT:
        counted = counted[:EVIDENCE_LIMIT]
    return ScoreLine(
        rule_id=rule.id,
        points=_round(_signal_points(rule, newest_first, now)),
        raw_points=_round(raw),
        reason=rule.explanation,
        evidence=[signal.signal_id for signal in counted],
    )


def _keeps_hot(rule: SignalRule, newest_first: Sequence[Signal], now: datetime) -> bool:
    if not isinstance(rule, BuyingSignalRule):
        return False
    if rule.hot_for_days is None:
        return True
    return now - newest_first[0].signal_at < timedelta(days=rule.hot_for_days)


def _capped(points: float, cap: float) -> float:
    return max(-cap, min(cap, points))


def _round(points: float) -> float:
    return round(points, 2) + 0.0


def _sum(points: Iterable[float]) -> float:
    return _round(math.fsum(points))
