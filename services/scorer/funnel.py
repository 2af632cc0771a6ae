"""The marketing-to-sales funnel over a period: lead -> MQL -> SAL -> SQL -> opportunity ->
customer, per source and per channel. Pure functions over the leads and their stage history.

The cohort is the leads received in the period; each is followed to wherever it got since.
A lead counts as having reached a stage when it reached that stage or a later one (an SDR
may accept a lead before the model made it MQL: it passed MQL too). Recycled and
disqualified are no funnel stages: a lead recycled after SAL stays counted at SAL.

Time in a stage: from the lead's first entry into the stage to its first entry into the next
one, for the leads that made both moves (the median, in seconds). With a cost per lead set
for a channel, its spend is leads x that cost, and cost per SQL and per customer divide it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

FUNNEL: tuple[str, ...] = ("lead", "mql", "sal", "sql", "opportunity", "customer")
RANK = {stage: position for position, stage in enumerate(FUNNEL)}
UNKNOWN = "unknown"


@dataclass
class FunnelLead:
    """One lead of the cohort: where it came from and when it first entered each stage."""

    lead_id: str
    source: str
    channel: str
    entered: dict[str, datetime] = field(default_factory=dict)

    @property
    def furthest(self) -> int:
        return max(RANK[stage] for stage in self.entered)


@dataclass(frozen=True)
class ChannelCost:
    cost_per_lead: Decimal
    currency: str


def funnel_leads(
    leads: Iterable[Mapping[str, Any]], changes: Iterable[Mapping[str, Any]]
) -> list[FunnelLead]:
    """The cohort from the scorer's rows: `leads` (lead_id, profile, entered_at) and their
    stage changes (lead_id, to_stage, changed_at), in any order."""
    found: dict[str, FunnelLead] = {}
    for row in leads:
        profile: Mapping[str, Any] = row["profile"] or {}
        attribution = profile.get("attribution") or {}
        found[row["lead_id"]] = FunnelLead(
            lead_id=row["lead_id"], source=profile.get("source") or UNKNOWN,
            channel=attribution.get("channel") or UNKNOWN,
            entered={"lead": row["entered_at"]},
        )
    for change in changes:
        lead = found.get(change["lead_id"])
        stage = change["to_stage"]
        if lead is None or stage not in RANK:
            continue
        earlier = lead.entered.get(stage)
        if earlier is None or change["changed_at"] < earlier:
            lead.entered[stage] = change["changed_at"]
    return list(found.values())


def _rate(count: int, of: int) -> float | None:
    return round(count / of, 4) if of else None


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def summary(leads: Sequence[FunnelLead], cost: ChannelCost | None = None) -> dict[str, Any]:
    """Counts, step and overall conversion rates, median time in each stage; costs."""
    counts = {stage: sum(1 for lead in leads if lead.furthest >= RANK[stage])
              for stage in FUNNEL}
    conversion = {f"{stage}_to_{FUNNEL[position + 1]}": _rate(counts[FUNNEL[position + 1]],
                                                             counts[stage])
                  for position, stage in enumerate(FUNNEL[:-1])}
    conversion["lead_to_customer"] = _rate(counts["customer"], counts["lead"])
    durations: dict[str, list[float]] = defaultdict(list)
    for lead in leads:
        for stage, following in pairwise(FUNNEL):
            start, end = lead.entered.get(stage), lead.entered.get(following)
            if start is not None and end is not None and end >= start:
                durations[stage].append((end - start).total_seconds())
    found: dict[str, Any] = {
        "counts": counts, "conversion": conversion,
        "median_seconds_in_stage": {
            stage: statistics.median(durations[stage]) if durations[stage] else None
            for stage in FUNNEL[:-1]},
    }
    if cost is not None:
        spend = cost.cost_per_lead * counts["lead"]

        def per(stage: str) -> str | None:
            return _money(spend / counts[stage]) if counts[stage] else None

        found["cost"] = {"currency": cost.currency, "cost_per_lead": _money(cost.cost_per_lead),
                         "spend": _money(spend), "cost_per_sql": per("sql"),
                         "cost_per_customer": per("customer")}
    return found


def funnel_report(
    leads: Sequence[FunnelLead], costs: Mapping[str, ChannelCost]
) -> dict[str, Any]:
    """The whole cohort, then per source and per channel (with the channel's costs)."""
    def grouped(key: str) -> dict[str, list[FunnelLead]]:
        groups: dict[str, list[FunnelLead]] = defaultdict(list)
        for lead in leads:
            groups[getattr(lead, key)].append(lead)
        return dict(sorted(groups.items()))

    return {
        "stages": list(FUNNEL),
        "overall": summary(leads),
        "by_source": {name: summary(members) for name, members in grouped("source").items()},
        "by_channel": {name: summary(members, costs.get(name))
                       for name, members in grouped("channel").items()},
    }
