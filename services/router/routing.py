"""Pure routing decisions over plain data: who gets a lead next. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SdrCandidate:
    """What round robin needs to know about an SDR."""

    id: str
    active: bool
    last_assigned_at: datetime | None
    created_at: datetime


def _round_robin_order(candidate: SdrCandidate) -> tuple[bool, datetime, datetime, str]:
    never_assigned = candidate.last_assigned_at is None
    return (
        not never_assigned,
        candidate.last_assigned_at or candidate.created_at,
        candidate.created_at,
        candidate.id,
    )


def choose_sdr(
    candidates: Iterable[SdrCandidate], exclude: Collection[str] = ()
) -> SdrCandidate | None:
    """The next SDR in round robin: the active one assigned longest ago, not in `exclude`.

    SDRs never assigned come first; ties go to the SDR created first, then to the smaller id,
    so the order is total and the same on every instance. None when nobody is eligible.
    """
    eligible = [c for c in candidates if c.active and c.id not in exclude]
    return min(eligible, key=_round_robin_order, default=None)


def escalation_target(
    candidates: Iterable[SdrCandidate], *, lapsed_sdr_id: str, previous_sdr_ids: Collection[str]
) -> SdrCandidate | None:
    """Who takes a lead whose offer to `lapsed_sdr_id` expired.

    Prefer an SDR who never had this lead; when all active SDRs already had it, give it back
    to one of them in round robin, but never to the SDR who just let it lapse.
    """
    pool = list(candidates)
    fresh = choose_sdr(pool, exclude={lapsed_sdr_id, *previous_sdr_ids})
    return fresh or choose_sdr(pool, exclude={lapsed_sdr_id})
