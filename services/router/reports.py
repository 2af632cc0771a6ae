"""The reports, computed from assignment rows: speed to lead, SLA, fairness. Pure functions.

An assignment row is one offer: the first offer of a lead, a re-offer after a lapse or a
rejection, a claim from the team's queue, or a hand-over to an AE. System time is measured
on first offers only (a re-offer's `scored_at` is the lead's, minutes before); an acceptance
counts as within the SLA exactly when `assignment.accepted` said so (`accepted_within_sla`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.router.routing import Rep, presence_fraction
from services.router.rules import DEFAULT_RULE, QUEUE_CLAIM_RULE_ID, RuleSet

HOPS: tuple[tuple[str, str, str], ...] = (
    ("received_to_scored", "received_at", "scored_at"),
    ("scored_to_assigned", "scored_at", "offered_at"),
    ("assigned_to_notified", "offered_at", "notified_at"),
    ("notified_to_accepted", "notified_at", "accepted_at"),
    ("accepted_to_contacted", "accepted_at", "contacted_at"),
)
"""Per-hop durations: system time (received -> scored -> assigned -> notified), then human
time (notified -> accepted -> contacted). A hop whose start or end a row lacks (a lead scored
by an older scorer has no `received_at`) is left out of that hop's figures only."""
SYSTEM_HOPS = frozenset({"received_to_scored", "scored_to_assigned", "assigned_to_notified"})
"""Measured on first offers only."""


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": percentile(values, 0.5),
            "p90": percentile(values, 0.9), "p99": percentile(values, 0.99)}


def is_first_offer(row: Mapping[str, Any]) -> bool:
    """The lead's first offer to an SDR: neither a re-offer, a queue claim nor a hand-over."""
    return row.get("attempt") == 1 and row.get("role", "sdr") == "sdr"


def _hops(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    for row in rows:
        first = is_first_offer(row)
        for name, start, end in HOPS:
            if name in SYSTEM_HOPS and not first:
                continue
            if row.get(start) is not None and row.get(end) is not None:
                found[name].append(max(0.0, (row[end] - row[start]).total_seconds()))
    return found


def speed_to_lead(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per hop, overall and grouped by team, rep and source."""
    def grouped(key: str) -> dict[str, Any]:
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[str(row.get(key) or "none")].append(row)
        return {name: {hop: summary(values) for hop, values in _hops(members).items()}
                for name, members in sorted(groups.items())}

    return {
        "overall": {hop: summary(values) for hop, values in _hops(rows).items()},
        "by_team": grouped("team_id"),
        "by_rep": grouped("sdr_id"),
        "by_source": grouped("source"),
    }


def accepted_within_sla(row: Mapping[str, Any]) -> bool:
    """As `assignment.accepted` says: accepted by the offer's deadline; a claim from the
    queue never is (the offers before it lapsed)."""
    return (row.get("accepted_at") is not None and row.get("rule_id") != QUEUE_CLAIM_RULE_ID
            and row["accepted_at"] <= row["deadline_at"])


def sla(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accept SLA met (accepted by the deadline), breached (accepted late, claimed from the
    queue, or lapsed), and escalated; contact SLA met or breached."""
    decided = [row for row in rows if row["status"] != "offered" or row.get("accepted_at")]
    met = sum(1 for row in decided if accepted_within_sla(row))
    escalated = sum(1 for row in rows if row["status"] == "escalated")
    late = sum(1 for row in decided if row.get("accepted_at") and not accepted_within_sla(row))
    breached = late + escalated
    contacted = [row for row in rows if row.get("contacted_at") and row.get("contact_deadline_at")]
    contact_met = sum(1 for row in contacted if row["contacted_at"] <= row["contact_deadline_at"])
    contact_breached = sum(1 for row in rows if row.get("contact_breached_at")) + sum(
        1 for row in contacted if row["contacted_at"] > row["contact_deadline_at"]
        and not row.get("contact_breached_at"))
    total = met + breached

    def rate(count: int, of: int) -> float | None:
        return round(count / of, 4) if of else None

    return {
        "accept": {"met": met, "breached": breached, "escalated": escalated,
                   "met_rate": rate(met, total), "breached_rate": rate(breached, total),
                   "escalated_rate": rate(escalated, total)},
        "contact": {"met": contact_met, "breached": contact_breached,
                    "met_rate": rate(contact_met, contact_met + contact_breached)},
    }


@dataclass(frozen=True)
class FairnessPool:
    """A pool the rules hand leads out from: a team (None: every rep of the role) and the
    people of that role in it, as routing sees them."""

    label: str
    team_id: str | None
    role: str
    members: Sequence[Rep]


def rule_pools(rule_set: RuleSet) -> list[tuple[str | None, str]]:
    """(team name, or None for every rep of the role; role) of each pool the rules use, in
    order: the SDR pools (pool, fallback, follow-the-sun) and the AE hand-over pools."""
    found: list[tuple[str | None, str]] = []
    for rule in rule_set.rules or [DEFAULT_RULE]:
        sdr_pools = [name for name in (rule.pool, rule.fallback_pool) if name]
        if rule.outside_hours == "follow_the_sun":
            sdr_pools.extend(rule.follow_the_sun)
        pools: list[tuple[str | None, str]] = [(name, "sdr") for name in sdr_pools] or [
            (None, "sdr")]
        pools.append((rule.handoff_pool, "ae"))
        found.extend(pool for pool in pools if pool not in found)
    return found


def not_eligible_reason(rep: Rep) -> str | None:
    """Why a member of a pool can never take its leads (so has no target share)."""
    if not rep.active:
        return "inactive"
    if rep.capacity == 0:
        return "capacity 0"
    return None


def fairness(
    rows: Sequence[Mapping[str, Any]], pools: Sequence[FairnessPool], since: datetime,
    until: datetime, names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Per pool the rules use: each eligible rep's actual share of the pool's leads kept
    against their target share (weight x presence, among the pool's eligible reps). Reps
    who can never take its leads (inactive, capacity 0) are listed apart, with no target;
    reps in no pool of the rules do not appear."""
    names = names or {}
    result: list[dict[str, Any]] = []
    for pool in pools:
        counts: dict[str, int] = defaultdict(int)
        for row in rows:
            if (row["status"] not in ("escalated", "rejected")
                    and row.get("role", "sdr") == pool.role
                    and (pool.team_id is None or row.get("team_id") == pool.team_id)):
                counts[row["sdr_id"]] += 1
        eligible = [rep for rep in pool.members if not_eligible_reason(rep) is None]
        effective = {rep.id: rep.weight * presence_fraction(rep, since, until)
                     for rep in eligible}
        total_weight = sum(effective.values()) or 1.0
        total = sum(counts[rep.id] for rep in eligible)
        result.append({
            "pool": pool.label, "team_id": pool.team_id, "role": pool.role,
            "leads": total,
            "reps": [
                {"rep_id": rep.id, "name": names.get(rep.id), "leads": counts[rep.id],
                 "actual_share": round(counts[rep.id] / total, 4) if total else 0.0,
                 "target_share": round(effective[rep.id] / total_weight, 4)}
                for rep in eligible
            ],
            "not_eligible": [
                {"rep_id": rep.id, "name": names.get(rep.id), "reason": not_eligible_reason(rep)}
                for rep in pool.members if rep not in eligible
            ],
        })
    return {"by_pool": result}
