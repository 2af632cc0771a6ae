"""The reports, computed from assignment rows: speed to lead, SLA, fairness. Pure functions."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.router.routing import Rep, presence_fraction

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


def _hops(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    for row in rows:
        for name, start, end in HOPS:
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


def sla(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accept SLA met (accepted by the deadline), breached (accepted late or lapsed), and
    escalated; contact SLA met or breached."""
    decided = [row for row in rows if row["status"] != "offered" or row.get("accepted_at")]
    met = sum(1 for row in decided if row.get("accepted_at") and
              row["accepted_at"] <= row["deadline_at"])
    escalated = sum(1 for row in rows if row["status"] == "escalated")
    late = sum(1 for row in decided if row.get("accepted_at") and
               row["accepted_at"] > row["deadline_at"])
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


def fairness(
    rows: Sequence[Mapping[str, Any]], reps: Sequence[Rep], since: datetime, until: datetime
) -> dict[str, Any]:
    """Actual share of leads kept per rep vs the target share (weight x presence)."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["status"] not in ("escalated", "rejected"):
            counts[row["sdr_id"]] += 1
    by_role: dict[str, list[Rep]] = defaultdict(list)
    for rep in reps:
        by_role[rep.role].append(rep)
    result: dict[str, Any] = {}
    for role, members in sorted(by_role.items()):
        effective = {rep.id: rep.weight * presence_fraction(rep, since, until) for rep in members}
        total_weight = sum(effective.values()) or 1.0
        total = sum(counts[rep.id] for rep in members)
        result[role] = [
            {"rep_id": rep.id, "leads": counts[rep.id],
             "actual_share": round(counts[rep.id] / total, 4) if total else 0.0,
             "target_share": round(effective[rep.id] / total_weight, 4)}
            for rep in members
        ]
    return {"by_role": result}
