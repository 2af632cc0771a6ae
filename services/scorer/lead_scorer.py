"""`LeadScorer`: one lead against one scoring model, with what does not depend on time
worked out once, then scored at any moment, checked for MQL, and followed along its decay.
The lead's signals come as their tally (`services.scorer.signal_tally`), so a lead scores the
same from its whole history and from its stored tally plus its new signals.

The facts fit rules look at (`facts_of`) are here too; the temperature over time is
`services.scorer.timeline`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from services.scorer.rule_index import rule_index
from services.scorer.score_result import (
    SECONDS_PER_DAY,
    ScoreResult,
    SignalLine,
    capped,
    rounded,
    summed,
    temperature_of,
)
from services.scorer.scoring_model import BuyingSignalRule, ScoringModel, SignalRule
from services.scorer.signal_tally import SignalTally
from services.scorer.timeline import Timeline
from shared.events import LeadProfile


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
                raw = capped(raw, rule.cap)
            self.matches.append(_Match(
                rule, found.newest_at(), counted, found.days, rounded(raw), found.evidence()
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
        engagement = summed(
            [*(line.points for line in self.buying_field_lines),
             *(line.points for line in signal_lines)]
        )
        total = rounded(self.fit + engagement)
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
            points.append(rounded(faded if cap is None else capped(faded, cap)))
        return rounded(self.fit + summed(points)) >= mql.min_total

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

    def timeline(self, origin: datetime) -> Timeline:
        """The temperature at any moment from `origin` on, cheaply (`Timeline`)."""
        return Timeline(self, origin)

    def _buying_signal(self, now: datetime) -> bool:
        return bool(self.buying_field_lines) or any(
            rule.hot_for_days is None
            or now - newest_at < timedelta(days=rule.hot_for_days)
            for newest_at, rule in self.buying
        )
