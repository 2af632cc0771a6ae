"""Pure routing decisions over plain data: who may take a lead, and who gets it. No I/O.

`eligibility(rep, lead, now)` lists why a rep cannot take a lead right now (empty: they can);
`choose_rep(candidates, lead, strategy, now, ...)` applies eligibility to a pool and then one
strategy, and returns a `Decision` that says everything a person needs to see why this rep got
the lead: who was considered, who was excluded and why, the figures compared, the tie-break.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

Strategy = Literal["round_robin", "weighted_fairness", "least_loaded", "account_owner"]
STRATEGIES: tuple[Strategy, ...] = (
    "round_robin", "weighted_fairness", "least_loaded", "account_owner",
)
Presence = Literal["available", "away", "offline"]
Role = Literal["sdr", "ae", "manager"]
ExclusionReason = Literal[
    "inactive",
    "paused",
    "out_of_office",
    "out_of_hours",
    "presence_away",
    "presence_offline",
    "at_capacity",
    "language",
    "territory",
    "segment",
    "already_had_lead",
    "wrong_role",
]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK_TIME = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class Shift:
    """One stretch of working time on a weekday, in the rep's own timezone."""

    weekday: int
    """0 = Monday ... 6 = Sunday."""
    start: time
    end: time


@dataclass(frozen=True)
class Period:
    """An out-of-office period, [start, end)."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Rep:
    """What routing needs to know about a person on the roster."""

    id: str
    created_at: datetime
    role: Role = "sdr"
    active: bool = True
    presence: Presence = "available"
    timezone: str = "UTC"
    working_hours: tuple[Shift, ...] | None = None
    """None: no schedule, always working."""
    out_of_office: tuple[Period, ...] = ()
    languages: frozenset[str] = frozenset()
    """Empty: not restricted (takes leads in any language)."""
    territories: frozenset[str] = frozenset()
    """Country codes; empty: not restricted."""
    segments: frozenset[str] = frozenset()
    """Market segments (`smb`, `mid-market`, `enterprise`...), lower case; empty: any."""
    capacity: int | None = None
    open_assignments: int = 0
    weight: float = 1.0
    last_assigned_at: datetime | None = None
    paused_until: datetime | None = None


@dataclass(frozen=True)
class LeadFacts:
    """The facts about a lead that rules and eligibility look at."""

    id: str
    temperature: str
    score: float
    stage: str = "lead"
    country: str | None = None
    language: str | None = None
    source: str | None = None
    employee_count: int | None = None
    account_key: str | None = None
    segment: str | None = None
    """The lead's market segment: its own `segment` field, else from its employee count."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Every other profile field, by name, for rule conditions."""

    def value(self, name: str) -> Any:
        if name in ("temperature", "score", "stage", "country", "language", "source",
                    "employee_count", "account_key", "segment"):
            return getattr(self, name)
        if name in ATTRIBUTION_FIELDS:
            attribution = self.fields.get("attribution")
            return attribution.get(name) if isinstance(attribution, Mapping) else None
        return self.fields.get(name)


ATTRIBUTION_FIELDS = frozenset({"channel", "campaign", "utm_source", "utm_medium",
                                "utm_campaign", "utm_term", "utm_content", "referrer",
                                "landing_page"})
"""Conditions on these look into the lead's `attribution` (where it came from)."""


@dataclass(frozen=True)
class Decision:
    """Why this rep: the outcome of `choose_rep`, stored with the assignment."""

    rep_id: str | None
    strategy: str
    candidates: list[str]
    excluded: dict[str, list[str]]
    scores: dict[str, float]
    tie_break: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "rep_id": self.rep_id,
            "strategy": self.strategy,
            "candidates": self.candidates,
            "excluded": self.excluded,
            "scores": {rep_id: round(value, 4) for rep_id, value in self.scores.items()},
            "tie_break": self.tie_break,
            "note": self.note,
        }


# Working time


def local_time(moment: datetime, timezone: str) -> datetime:
    return moment.astimezone(ZoneInfo(timezone))


def in_working_hours(shifts: Sequence[Shift] | None, timezone: str, now: datetime) -> bool:
    if shifts is None:
        return True
    local = local_time(now, timezone)
    clock = local.time()
    return any(
        shift.weekday == local.weekday() and shift.start <= clock < shift.end for shift in shifts
    )


def next_opening(
    shifts: Sequence[Shift] | None, timezone: str, now: datetime
) -> datetime | None:
    """The first moment at or after `now` inside working hours (None: no shift at all)."""
    if shifts is None or in_working_hours(shifts, timezone, now):
        return now
    if not shifts:
        return None
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    best: datetime | None = None
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        for shift in shifts:
            if shift.weekday != day.weekday():
                continue
            start = datetime.combine(day, shift.start, tzinfo=zone)
            if start >= local and (best is None or start < best):
                best = start
    return None if best is None else best.astimezone(now.tzinfo)


def working_deadline(
    shifts: Sequence[Shift] | None, timezone: str, start: datetime, duration: timedelta
) -> datetime:
    """`duration` of working time from `start`: the clock holds outside working hours.

    An offer made at 17:59 with two minutes to accept, in a day ending at 18:00, is due at
    one minute past the next opening. Without a schedule the clock never stops.
    """
    if shifts is None or not shifts:
        return start + duration
    zone = ZoneInfo(timezone)
    remaining, moment = duration, start
    for _ in range(64):
        opening = next_opening(shifts, timezone, moment)
        if opening is None:
            break
        local = opening.astimezone(zone)
        clock = local.time()
        ends = [
            datetime.combine(local.date(), shift.end, tzinfo=zone)
            for shift in shifts
            if shift.weekday == local.weekday() and shift.start <= clock < shift.end
        ]
        stretch_end = max(ends).astimezone(start.tzinfo) if ends else opening
        if opening + remaining <= stretch_end:
            return opening + remaining
        remaining -= stretch_end - opening
        moment = stretch_end
    return moment + remaining


def out_of_office(periods: Iterable[Period], now: datetime) -> bool:
    return any(period.start <= now < period.end for period in periods)


# Eligibility


class LocalClocks:
    """`now` on the wall clock of each timezone, worked out once per zone per decision."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._by_zone: dict[str, tuple[int, time]] = {}
        self._working: dict[tuple[int, str], bool] = {}

    def weekday_and_time(self, timezone: str) -> tuple[int, time]:
        found = self._by_zone.get(timezone)
        if found is None:
            local = local_time(self.now, timezone)
            found = self._by_zone[timezone] = (local.weekday(), local.time())
        return found

    def working(self, shifts: Sequence[Shift] | None, timezone: str) -> bool:
        """Inside `shifts` now? Reps sharing a schedule object share one answer (the shifts
        stay alive, so their id is stable, for the life of this object)."""
        if shifts is None:
            return True
        key = (id(shifts), timezone)
        found = self._working.get(key)
        if found is None:
            weekday, clock = self.weekday_and_time(timezone)
            found = any(s.weekday == weekday and s.start <= clock < s.end for s in shifts)
            self._working[key] = found
        return found


def eligibility(
    rep: Rep, lead: LeadFacts, now: datetime, clocks: LocalClocks | None = None
) -> list[ExclusionReason]:
    """Every reason `rep` cannot take `lead` at `now`; an empty list means they can."""
    reasons: list[ExclusionReason] = []
    if not rep.active:
        reasons.append("inactive")
    if rep.paused_until is not None and now < rep.paused_until:
        reasons.append("paused")
    if rep.out_of_office and out_of_office(rep.out_of_office, now):
        reasons.append("out_of_office")
    if not (clocks or LocalClocks(now)).working(rep.working_hours, rep.timezone):
        reasons.append("out_of_hours")
    if rep.presence == "away":
        reasons.append("presence_away")
    elif rep.presence == "offline":
        reasons.append("presence_offline")
    if rep.capacity is not None and rep.open_assignments >= rep.capacity:
        reasons.append("at_capacity")
    if lead.language and rep.languages and lead.language.lower() not in rep.languages:
        reasons.append("language")
    if lead.country and rep.territories and lead.country.upper() not in rep.territories:
        reasons.append("territory")
    if lead.segment and rep.segments and lead.segment.lower() not in rep.segments:
        reasons.append("segment")
    return reasons


def segment_of(employee_count: int | None, bands: Sequence[tuple[str, int]]) -> str | None:
    """The band whose lower bound (`min_employees`) is the highest one `employee_count`
    reaches; None without a count or below every band."""
    if employee_count is None:
        return None
    found: tuple[str, int] | None = None
    for name, minimum in bands:
        if employee_count >= minimum and (found is None or minimum > found[1]):
            found = (name, minimum)
    return None if found is None else found[0]


@dataclass(frozen=True)
class TeamHours:
    """A team's weekly hours in its timezone; `shifts` None: the team never closes."""

    shifts: tuple[Shift, ...] | None = None
    timezone: str = "UTC"

    def open_at(self, now: datetime) -> bool:
        return in_working_hours(self.shifts, self.timezone, now)

    def next_opening(self, now: datetime) -> datetime | None:
        """`now` when open; None when the team has hours but no shift at all."""
        return next_opening(self.shifts, self.timezone, now)


ALWAYS_OPEN = TeamHours()


def with_team_hours(rep: Rep, shifts: tuple[Shift, ...] | None, timezone: str) -> Rep:
    """A rep without hours of their own works their team's hours (in the team's timezone)."""
    if rep.working_hours is not None or shifts is None:
        return rep
    return replace(rep, working_hours=shifts, timezone=timezone)


# Strategies


def round_robin_key(rep: Rep) -> tuple[bool, datetime, datetime, str]:
    """Never assigned first, then assigned longest ago; ties by creation, then id."""
    return (
        rep.last_assigned_at is not None,
        rep.last_assigned_at or rep.created_at,
        rep.created_at,
        rep.id,
    )


def presence_fraction(rep: Rep, window_start: datetime, now: datetime) -> float:
    """Share of the window the rep could take leads: not before joining, not while OOO.

    The correction that keeps a rep back from holiday (or new on the team) from being
    flooded to "catch up" on leads they could never have had.
    """
    if rep.created_at <= window_start and not rep.out_of_office:
        return 1.0
    window = (now - window_start).total_seconds()
    if window <= 0:
        return 1.0
    start = max(window_start, rep.created_at)
    present = max(0.0, (now - start).total_seconds())
    for period in rep.out_of_office:
        overlap_start, overlap_end = max(period.start, start), min(period.end, now)
        if overlap_end > overlap_start:
            present -= (overlap_end - overlap_start).total_seconds()
    return min(1.0, max(0.0, present / window))


def fairness_deficits(
    pool: Sequence[Rep], counts: Mapping[str, int], window_start: datetime, now: datetime
) -> dict[str, float]:
    """How far each rep is below their target share, in leads, if one more lead is given.

    Target share = weight x presence in the window, normalised over the pool. A positive
    deficit means the rep had fewer leads than their share of (total + 1).
    """
    effective = {rep.id: rep.weight * presence_fraction(rep, window_start, now) for rep in pool}
    total_weight = sum(effective.values())
    total = sum(counts.get(rep.id, 0) for rep in pool) + 1
    if total_weight <= 0:
        return {rep.id: -float(counts.get(rep.id, 0)) for rep in pool}
    return {
        rep.id: effective[rep.id] / total_weight * total - counts.get(rep.id, 0) for rep in pool
    }


def choose_rep(
    candidates: Sequence[Rep],
    lead: LeadFacts,
    strategy: Strategy,
    now: datetime,
    *,
    exclude: Collection[str] = (),
    counts: Mapping[str, int] | None = None,
    window_start: datetime | None = None,
    account_owner_id: str | None = None,
    role: Role | None = None,
) -> Decision:
    """Pick the rep for `lead` among `candidates` with `strategy`; `rep_id` None: nobody.

    `exclude` are reps that must not get the lead (who let it lapse, who rejected it).
    `counts` are leads per rep over the fairness window starting at `window_start`.
    """
    excluded: dict[str, list[str]] = {}
    eligible: list[Rep] = []
    clocks = LocalClocks(now)
    for rep in candidates:
        reasons: list[str] = []
        if role is not None and rep.role != role:
            reasons.append("wrong_role")
        if rep.id in exclude:
            reasons.append("already_had_lead")
        reasons.extend(eligibility(rep, lead, now, clocks))
        if reasons:
            excluded[rep.id] = reasons
        else:
            eligible.append(rep)
    ids = [rep.id for rep in candidates]
    if strategy == "account_owner" and account_owner_id is not None:
        owner = next((rep for rep in eligible if rep.id == account_owner_id), None)
        if owner is not None:
            return Decision(owner.id, strategy, ids, excluded, {}, "account owner",
                            note=f"account {lead.account_key} is owned by this rep")
        fallback = choose_rep(candidates, lead, "round_robin", now, exclude=exclude, role=role)
        return Decision(fallback.rep_id, strategy, ids, excluded, fallback.scores,
                        fallback.tie_break, note="account owner not eligible; round robin")
    if not eligible:
        return Decision(None, strategy, ids, excluded, {}, "nobody eligible")
    if strategy == "weighted_fairness":
        deficits = fairness_deficits(
            eligible, counts or {}, window_start or now - timedelta(days=7), now
        )
        best = max(deficits.values())
        tied = [rep for rep in eligible if deficits[rep.id] >= best - 1e-9]
        chosen = min(tied, key=round_robin_key)
        tie = "furthest below target share" if len(tied) == 1 else (
            f"{len(tied)} reps equally below target; round robin among them")
        return Decision(chosen.id, strategy, ids, excluded, deficits, tie)
    if strategy == "least_loaded":
        loads = {rep.id: load_ratio(rep) for rep in eligible}
        lowest = min(loads.values())
        tied = [rep for rep in eligible if loads[rep.id] <= lowest + 1e-9]
        chosen = min(tied, key=round_robin_key)
        tie = "least loaded" if len(tied) == 1 else (
            f"{len(tied)} reps equally loaded; round robin among them")
        return Decision(chosen.id, strategy, ids, excluded, loads, tie)
    chosen = min(eligible, key=round_robin_key)
    return Decision(chosen.id, "round_robin" if strategy == "account_owner" else strategy, ids,
                    excluded, {}, "assigned longest ago")


def load_ratio(rep: Rep) -> float:
    """Open assignments over capacity (or the plain count when capacity is unlimited)."""
    if rep.capacity:
        return rep.open_assignments / rep.capacity
    return float(rep.open_assignments)


def _weekday(day: str) -> int:
    name = day.strip().lower()
    for number, short in enumerate(WEEKDAYS):
        if name in (short, DAY_NAMES[number]):
            return number
    raise ValueError(f"unknown day {day[:20]!r}: use mon, tue, wed, thu, fri, sat or sun")


def _clock_time(text: str, stretch: str) -> time:
    if not _CLOCK_TIME.match(text.strip()):
        raise ValueError(f"{stretch[:20]!r} is not a range of times such as '09:00-17:30'")
    return time.fromisoformat(text.strip())


def parse_working_hours(spec: Mapping[str, Sequence[str]] | None) -> tuple[Shift, ...] | None:
    """`{"mon": ["09:00-12:00", "13:00-17:30"], ...}` -> shifts; None stays None."""
    if spec is None:
        return None
    shifts: list[Shift] = []
    for day, ranges in spec.items():
        weekday = _weekday(day)
        for stretch in ranges:
            start_text, _, end_text = stretch.partition("-")
            start, end = _clock_time(start_text, stretch), _clock_time(end_text, stretch)
            if end <= start:
                raise ValueError(f"{day} {stretch}: the end must be after the start")
            shifts.append(Shift(weekday, start, end))
    return tuple(shifts)
