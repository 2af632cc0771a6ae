"""`LeadScorer`: one lead against one scoring model, with what does not depend on time
worked out once, then scored at any moment, checked for MQL, and followed along its decay.
The lead's signals come as their tally (`services.scorer.signal_tally`), so a lead scores the
same from its whole history and from its stored tally plus its new signals.

The facts fit rules look at (`facts_of`) and the rounding of points are here too."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from services.scorer.rule_index import rule_index
from services.scorer.score_result import (
    SECONDS_PER_DAY,
    ScoreResult,
    SignalLine,
    temperature_of,
)
from services.scorer.scoring_model import BuyingSignalRule, ScoringModel, SignalRule
from services.scorer.signal_tally import SignalTally
from shared.events import LeadProfile, Temperature


def facts_of(profile: LeadProfile, model: ScoringModel) -> dict[str, object]:
    """The values fit rules look at: the profile's fields plus `email_domain` and `region`."""
    facts: dict[str, object] = dict(iter(profile))  # dict(profile) asks pydantic for `keys`
    email = profile.email
    facts["email_domain"] = email.rpartition("@")[2].lower() if "@" in email else None
    facts["region"] = model.region_of(profile.country)
    return facts


class _Match(NamedTuple):
    """A signal rule that matched some of the lead's signals, with what does not depend on
    time."""

    rule: SignalRule
    newest_at: datetime
    counted: int
    days: Sequence[float]
    """The day of each counted signal, when the rule's points fade."""
    raw_points: float
    evidence: list[str]


class LeadScorer:
    """One lead against one model: what does not depend on time is worked out once.

    The lead's signals come as their `SignalTally` under the model (`tally_of` a history)."""

    def __init__(self, profile: LeadProfile, tally: SignalTally, model: ScoringModel):
        self.model = model
        index = rule_index(model)
        facts = facts_of(profile, model)
        self.fit_lines, self.fit = index.fit.lines_and_total(facts)
        self.buying_field_lines = index.buying_fields.lines(facts)
        self.matches: list[_Match] = []
        for rule in model.signal_rules:  # the model's order, as the breakdown shows it
            found = tally.rules.get(rule.id)
            if found is None:
                continue
            counted = found.counted(rule)
            raw = rule.points * counted
            if rule.cap is not None:
                raw = _capped(raw, rule.cap)
            self.matches.append(_Match(
                rule, found.newest_at(), counted, found.days, _round(raw), found.evidence()
            ))
        # Buying signals keep the lead hot for a while: (their newest signal's time, their rule).
        self.buying = [(match.newest_at, match.rule) for match in self.matches
                       if isinstance(match.rule, BuyingSignalRule)]
        self.fades = any(
            match.rule.half_life_days is not None for match in self.matches
        ) or any(rule.hot_for_days is not None for _, rule in self.buying)
        self._faded: tuple[datetime, list[float]] | None = None

    def faded(self, now: datetime) -> list[float]:
        """Each matching rule's points at `now`, after decay and before its cap.

        """
        if self._faded is not None and self._faded[0] == now:
            return self._faded[1]
        today = now.timestamp() / SECONDS_PER_DAY
        points: list[float] = []
        for match in self.matches:
            rule = match.rule
            half_life = rule.half_life_days
            if half_life is None:
                points.append(rule.points * match.counted)
                continue
            factors = math.fsum(
                0.5 ** (max(today - day, 0.0) / half_life) for day in match.days
            )
            points.append(rule.points * factors)
        self._faded = (now, points)
        return points

    def at(self, now: datetime) -> ScoreResult:
        signal_lines = []
        for match, faded in zip(self.matches, self.faded(now), strict=True):
            rule = match.rule
            if rule.cap is not None:
                faded = max(-rule.cap, min(rule.cap, faded))
            signal_lines.append(SignalLine(
                rule.id, round(faded, 2) + 0.0, match.raw_points, rule.explanation, match.evidence
            ))
        engagement = _sum(
            [*(line.points for line in self.buying_field_lines),
             *(line.points for line in signal_lines)]
        )
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
            buying_field_lines=self.buying_field_lines,
            signal_lines=tuple(signal_lines),
            buying_signal=buying_signal,
            mql=buying_signal or (mql is not None and mql.met(fit=self.fit, total=total)),
        )

    def mql_at(self, now: datetime) -> bool:
        """`at(now).mql`, without building the breakdown."""
        if self._buying_signal(now):
            return True
        mql = self.model.mql
        if mql is None or (mql.min_fit is not None and self.fit < mql.min_fit):
            return False
        points = [line.points for line in self.buying_field_lines]
        for match, faded in zip(self.matches, self.faded(now), strict=True):
            cap = match.rule.cap
            points.append(_round(faded if cap is None else _capped(faded, cap)))
        return _round(self.fit + _sum(points)) >= mql.min_total

    def settled_at(self, origin: datetime) -> datetime | None:
        """When every fading point will have faded to nothing and every buying window closed, if
        none of the fading rules takes points away (then the temperature only ever falls);
        None when one does."""
        latest_days = 0.0
        latest = origin
        for match, at_origin in zip(self.matches, self.faded(origin), strict=True):
            rule = match.rule
            if rule.half_life_days is not None:
                if at_origin < 0:
                    return None
                if at_origin > 0:
                    halvings = math.log2(max(at_origin, 1.0) / 0.004)
                    latest_days = max(latest_days, rule.half_life_days * halvings)
        for newest_at, rule in self.buying:
            if rule.hot_for_days is not None:
                latest = max(latest, newest_at + timedelta(days=rule.hot_for_days))
        return max(latest, origin + timedelta(days=latest_days)) + timedelta(seconds=1)

    def timeline(self, origin: datetime) -> Callable[[datetime], Temperature]:
        """The temperature at any moment from `origin` on, cheaply, without the breakdown.

        A rule's decayed points at `origin + d` are its points at `origin` halved every
        half-life of `d`, so a moment costs one power per distinct half-life instead of one
        per signal. Most moments are decided from the unrounded total, when it is further
        from every threshold than the rounding of the lines could move it; the others are
        summed line by line and rounded exactly as `at()` rounds. (A signal dated after
        `origin` breaks the shortcut: `at()` itself is used then.)
        """
        thresholds = self.model.thresholds
        fixed = [line.points for line in self.buying_field_lines]
        hot_for_good = bool(fixed) or any(rule.hot_for_days is None for _, rule in self.buying)
        hot_until = max(
            (
                newest_at + timedelta(days=rule.hot_for_days)
                for newest_at, rule in self.buying
                if rule.hot_for_days is not None
            ),
            default=None,
        )
        if any(match.newest_at > origin for match in self.matches):
            return lambda moment: self.at(moment).temperature
        half_lives = sorted(
            {match.rule.half_life_days for match in self.matches
             if match.rule.half_life_days is not None}
        )
        slot = {half_life: number for number, half_life in enumerate(half_lives)}
        constant: list[float] = []
        fading: list[tuple[float, int, float | None]] = []
        for match, at_origin in zip(self.matches, self.faded(origin), strict=True):
            rule = match.rule
            if rule.half_life_days is None:
                constant.append(_round(at_origin if rule.cap is None
                                       else _capped(at_origin, rule.cap)))
            else:
                fading.append((at_origin, slot[rule.half_life_days], rule.cap))
        # For the unrounded total: uncapped terms summed per half-life, the capped ones apart
        # (decay only shrinks a term, so one under its cap at `origin` stays under it).
        per_half_life = [0.0] * len(half_lives)
        capped_terms: list[tuple[float, float, float]] = []
        for at_origin, number, cap in fading:
            if cap is not None and abs(at_origin) > cap:
                capped_terms.append((at_origin, half_lives[number], cap))
            else:
                per_half_life[number] += at_origin
        base = self.fit + math.fsum([*fixed, *constant])
        magnitude = abs(self.fit) + math.fsum(abs(value) for value in [*fixed, *constant]) + (
            math.fsum(abs(at_origin) for at_origin, _, _ in fading)
        )
        # Each rounded line moves by at most half a cent, and so do the two sums rounded after.
        margin = 0.005 * (len(fading) + 2) + 1e-9 * (1.0 + magnitude)
        hot, warm = thresholds.hot, thresholds.warm
        grouped = [(life, total) for life, total in zip(half_lives, per_half_life, strict=True)
                   if total]

        def temperature(moment: datetime) -> Temperature:
            if hot_for_good or (hot_until is not None and moment < hot_until):
                return "hot"
            elapsed_days = (moment - origin).total_seconds() / SECONDS_PER_DAY
            unrounded = base
            for life, total in grouped:
                unrounded += total * 0.5 ** (elapsed_days / life)
            for at_origin, life, limit in capped_terms:
                unrounded += _capped(at_origin * 0.5 ** (elapsed_days / life), limit)
            if abs(unrounded - hot) > margin and abs(unrounded - warm) > margin:
                return "hot" if unrounded >= hot else "warm" if unrounded >= warm else "cold"
            factors = [0.5 ** (elapsed_days / half_life) for half_life in half_lives]
            points = [*fixed, *constant]
            for at_origin, number, cap in fading:
                value = at_origin * factors[number]
                if cap is not None:
                    value = _capped(value, cap)
                points.append(_round(value))
            total = _round(self.fit + _sum(points))
            return temperature_of(total, thresholds=thresholds, buying_signal=False)

        return temperature

    def _buying_signal(self, now: datetime) -> bool:
        return bool(self.buying_field_lines) or any(
            rule.hot_for_days is None
            or now - newest_at < timedelta(days=rule.hot_for_days)
            for newest_at, rule in self.buying
        )


def _capped(points: float, cap: float) -> float:
    return max(-cap, min(cap, points))


def _round(points: float) -> float:
    return round(points, 2) + 0.0


def _sum(points: Iterable[float]) -> float:
    return _round(math.fsum(points))
