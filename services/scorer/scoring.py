"""`score()`: a lead, its signals, a scoring model and a moment in, a score out.

Pure: no I/O, and `now` is an argument, so the same inputs always give the same score (a replay
of a lead's whole history included). Signals are deduplicated by id, so a redelivered signal
never counts twice. A signal's points fade by half every `half_life_days` of its rule; points
are rounded to the hundredth, per line and in total, so that a score read back from storage
compares equal to a fresh one.

`next_change_at()` says when the temperature of a quiet lead will change by decay alone, so
that the sweep looks at each lead once per band crossing instead of rescoring everything.

What goes in and out is in `services.scorer.score_result`; the work itself, one lead against
one model, is `services.scorer.lead_scorer.LeadScorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from services.scorer.lead_scorer import LeadScorer
from services.scorer.score_result import SECONDS_PER_DAY, ScoreResult, Signal
from services.scorer.scoring_model import ScoringModel
from services.scorer.signal_tally import tally_of
from shared.events import LeadProfile, Temperature


def score(
    profile: LeadProfile,
    signals: Iterable[Signal],
    model: ScoringModel,
    now: datetime,
) -> ScoreResult:
    return LeadScorer(profile, tally_of(signals, model), model).at(now)


def score_and_next_change(
    profile: LeadProfile,
    signals: Iterable[Signal],
    model: ScoringModel,
    now: datetime,
) -> tuple[ScoreResult, datetime | None]:
    """`score()` and `next_change_at()` at once, sharing the work that does not depend on time."""
    scorer = LeadScorer(profile, tally_of(signals, model), model)
    result = scorer.at(now)
    return result, next_change_of(scorer, now, current=result.temperature)


def makes_mql(
    profile: LeadProfile, signals: Iterable[Signal], model: ScoringModel, now: datetime
) -> bool:
    """`score(...).mql` alone: whether the model hands the lead to sales at `now`."""
    return LeadScorer(profile, tally_of(signals, model), model).mql_at(now)


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
    return next_change_of(
        LeadScorer(profile, tally_of(signals, model), model), now,
        horizon=horizon, precision=precision,
    )


def next_change_of(
    scorer: LeadScorer,
    now: datetime,
    *,
    horizon: timedelta = timedelta(days=400),
    precision: timedelta = timedelta(minutes=1),
    current: Temperature | None = None,
) -> datetime | None:
    """`next_change_at()` of a lead already taken into a `LeadScorer`.

    `current`: the lead's temperature at `now`, when the caller has it (a cold lead whose
    points only fade is then done with at once)."""
    if not scorer.fades:
        return None
    settled = scorer.settled_at(now)
    if settled is not None and current == "cold":
        return None
    temperature = scorer.timeline(now)
    current = temperature(now)

    def changed(moment: datetime) -> bool:
        return temperature(moment) != current

    step = timedelta(hours=1)
    before, probe = now, now + step
    end = now + horizon
    if settled is not None:
        # Nothing that fades takes points away: the temperature can only fall, and is final
        # once every fading point rounds to nothing.
        if current == "cold" or not changed(settled):
            return None
        end = min(end, settled)
        for early, late in temperature.fall_windows(current):
            if now < early and late < end and not changed(early) and changed(late):
                return _bisected(changed, now, early, late, precision)
    if settled is None:
        while probe < end and not changed(probe):
            before, step = probe, step * 2
            probe = before + step
    else:
        # The temperature only falls, so `changed` stays true once true: the first doubling
        # step that changed is found by bisecting the steps, with the same outcome as trying
        # them in turn.
        steps: list[datetime] = []
        while probe < end:
            steps.append(probe)
            step *= 2
            probe = steps[-1] + step
        low, high = 0, len(steps)
        while low < high:
            pick = (low + high) // 2
            if changed(steps[pick]):
                high = pick
            else:
                low = pick + 1
        if low < len(steps):
            before, probe = (steps[low - 1] if low else now), steps[low]
        else:
            before = steps[-1] if steps else now
    if probe >= end:
        probe = end
        if not changed(end):
            return end
    return _bisected(changed, now, before, probe, precision)


def _bisected(
    changed: Callable[[datetime], bool],
    now: datetime,
    before: datetime,
    after: datetime,
    precision: timedelta,
) -> datetime:
    """The first moment `changed` between `before` (not) and `after` (changed), found to
    `precision` or a thousandth of the wait, whichever is longer, and never before it."""
    tolerance = max(precision, (after - now) / 1000)
    while after - before > tolerance:
        middle = before + (after - before) / 2
        if changed(middle):
            after = middle
        else:
            before = middle
    return after
