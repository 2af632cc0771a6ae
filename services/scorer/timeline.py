"""`Timeline`: a lead's temperature at any moment from an origin on, cheaply, without the
breakdown, and where it falls to the next band when nothing but decay moves it.

A rule's decayed points at `origin + d` are its points at `origin` halved every half-life of
`d`, so a moment costs one power per distinct half-life instead of one per signal. Most moments
are decided from the unrounded total, when it is further from every threshold than the rounding
of the lines could move it; the others are summed line by line and rounded exactly as
`LeadScorer.at()` rounds. (A signal dated after `origin` breaks the shortcut: `at()` itself is
used then.)

When every fading point shares one half-life and none takes points away (a campaign's email
opens), the unrounded total is a piecewise-linear function of `x = 0.5 ** (d / half_life)`
(the capped lines bend it where they leave their cap), so the moment it reaches a value is
solved in closed form (`fall_windows`) instead of searched for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from services.scorer.score_result import (
    SECONDS_PER_DAY,
    capped,
    rounded,
    summed,
    temperature_of,
)
from shared.events import Temperature

if TYPE_CHECKING:
    from services.scorer.lead_scorer import LeadScorer

_MICROSECOND = timedelta(microseconds=1)


class Timeline:
    """A lead's temperature from `origin` on: `timeline(moment)`."""

    def __init__(self, scorer: LeadScorer, origin: datetime) -> None:
        self.origin = origin
        self.fit = scorer.fit
        self.thresholds = scorer.model.thresholds
        self.fixed = [line.points for line in scorer.buying_field_lines]
        self.hot_for_good = bool(self.fixed) or any(
            rule.hot_for_days is None for _, rule in scorer.buying
        )
        self.hot_until = max(
            (
                newest_at + timedelta(days=rule.hot_for_days)
                for newest_at, rule in scorer.buying
                if rule.hot_for_days is not None
            ),
            default=None,
        )
        self.exact: Callable[[datetime], Temperature] | None = None
        if any(match.newest_at > origin for match in scorer.matches):
            self.exact = lambda moment: scorer.at(moment).temperature
        self.half_lives = sorted(
            {match.rule.half_life_days for match in scorer.matches
             if match.rule.half_life_days is not None}
        )
        slot = {half_life: number for number, half_life in enumerate(self.half_lives)}
        self.constant: list[float] = []
        self.fading: list[tuple[float, int, float | None]] = []
        for match, at_origin in zip(scorer.matches, scorer.faded(origin), strict=True):
            rule = match.rule
            if rule.half_life_days is None:
                self.constant.append(rounded(at_origin if rule.cap is None
                                            else capped(at_origin, rule.cap)))
            else:
                self.fading.append((at_origin, slot[rule.half_life_days], rule.cap))
        # For the unrounded total: uncapped terms summed per half-life, the capped ones apart
        # (decay only shrinks a term, so one under its cap at `origin` stays under it).
        per_half_life = [0.0] * len(self.half_lives)
        self.capped_terms: list[tuple[float, float, float]] = []
        for at_origin, number, cap in self.fading:
            if cap is not None and abs(at_origin) > cap:
                self.capped_terms.append((at_origin, self.half_lives[number], cap))
            else:
                per_half_life[number] += at_origin
        self.base = self.fit + math.fsum([*self.fixed, *self.constant])
        magnitude = abs(self.fit) + math.fsum(
            abs(value) for value in [*self.fixed, *self.constant]
        ) + math.fsum(abs(at_origin) for at_origin, _, _ in self.fading)
        # Each rounded line moves by at most half a cent, and so do the two sums rounded after.
        self.margin = 0.005 * (len(self.fading) + 2) + 1e-9 * (1.0 + magnitude)
        self.grouped = [
            (life, total) for life, total in zip(self.half_lives, per_half_life, strict=True)
            if total
        ]

    def __call__(self, moment: datetime) -> Temperature:
        if self.exact is not None:
            return self.exact(moment)
        if self.hot_for_good or (self.hot_until is not None and moment < self.hot_until):
            return "hot"
        elapsed_days = (moment - self.origin).total_seconds() / SECONDS_PER_DAY
        unrounded = self.base
        for life, total in self.grouped:
            unrounded += total * 0.5 ** (elapsed_days / life)
        for at_origin, life, limit in self.capped_terms:
            unrounded += capped(at_origin * 0.5 ** (elapsed_days / life), limit)
        hot, warm = self.thresholds.hot, self.thresholds.warm
        if abs(unrounded - hot) > self.margin and abs(unrounded - warm) > self.margin:
            return "hot" if unrounded >= hot else "warm" if unrounded >= warm else "cold"
        factors = [0.5 ** (elapsed_days / half_life) for half_life in self.half_lives]
        points = [*self.fixed, *self.constant]
        for at_origin, number, cap in self.fading:
            value = at_origin * factors[number]
            if cap is not None:
                value = capped(value, cap)
            points.append(rounded(value))
        total = rounded(self.fit + summed(points))
        return temperature_of(total, thresholds=self.thresholds, buying_signal=False)

    def fall_windows(self, current: Temperature) -> Iterator[tuple[datetime, datetime]]:
        """Pairs of moments around the one at which a lead now `current` falls to the band
        below, narrowest first, if the closed form applies (one half-life, nothing fading below
        zero, no signal dated after `origin`): the temperature should still be `current` at the
        first moment of a pair and no longer at the second. None when the lead never falls
        or the closed form does not apply.
        The caller checks both moments: rounding may put the answer outside the narrow pair,
        and floating point outside any."""
        if self.exact is not None or current == "cold" or len(self.half_lives) != 1:
            return
        if any(at_origin < 0 for at_origin, _, _ in self.fading):
            return
        threshold = self.thresholds.hot if current == "hot" else self.thresholds.warm
        # Above `threshold + margin` the band is certainly still `current`, below
        # `threshold - margin` certainly not. With one fading line, and every other line a
        # whole number of cents, the total falls below the threshold when that line rounds
        # a cent lower, half a cent below the threshold: the narrow pair straddles that.
        if len(self.fading) == 1:
            yield from self._window(current, threshold - 0.005 + 1e-7, threshold - 0.005 - 1e-7)
        yield from self._window(current, threshold + self.margin, threshold - self.margin)

    def _window(self, current: Temperature, high: float, low: float
                ) -> Iterator[tuple[datetime, datetime]]:
        late = self._moment_at(low)
        if late is None:
            return
        early = self._moment_at(high) or late
        if current == "hot" and self.hot_until is not None and self.hot_until > early:
            early, late = max(early, self.hot_until - _MICROSECOND), max(late, self.hot_until)
        yield early, late

    @cached_property
    def _pieces(self) -> list[tuple[float, float]]:
        """(x, the unrounded total at x) where the total's slope in x changes, x from 0 up to
        1; x is `0.5 ** (days / half_life)`, 1 at the origin and 0 forever after. Between two
        pieces the total is linear in x: the capped lines leave their caps at these points."""
        slope = math.fsum(part for _, part in self.grouped)
        kinks = sorted({0.0, 1.0, *(limit / at_origin for at_origin, _, limit in
                                    self.capped_terms)})
        return [
            (x, self.base + slope * x + math.fsum(
                min(limit, at_origin * x) for at_origin, _, limit in self.capped_terms))
            for x in kinks
        ]

    def _moment_at(self, total: float) -> datetime | None:
        """When the unrounded total comes down to `total` (the origin if it is there already);
        None if it never does."""
        pieces = self._pieces
        if pieces[-1][1] <= total:
            return self.origin
        for (x0, v0), (x1, v1) in itertools.pairwise(pieces):
            if v0 < total <= v1:
                x = x0 + (total - v0) * (x1 - x0) / (v1 - v0)
                return self.origin + timedelta(days=-self.half_lives[0] * math.log2(x))
        return None
