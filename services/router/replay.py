"""What-if replay: route the last days' leads again under a draft rule set, and under the rules
in force, on today's roster, and compare. Pure simulation over plain data.

The leads are the first offers of the period, each with the facts routing saw: the lead's
profile as the router keeps it, with the score and temperature of the moment it was offered
(its assignment's snapshot). Who was present, working, out of office or loaded then is not
kept, so both runs see every rep of today's roster available, in hours and with nothing
open (a capacity of 0 still excludes); round robin and fairness follow the replayed
assignments in order. Both runs use the same simulation, so their difference is the rules'
alone; `actual` says what really happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.router.routing import LeadFacts, Rep, choose_rep
from services.router.rules import DEFAULT_RULE, RuleSet, first_match

CHANGED_LIMIT = 500
"""Leads listed one by one in `changed`; the counts cover all."""


@dataclass(frozen=True)
class ReplayLead:
    lead_id: str
    offered_at: datetime
    actual_rep_id: str
    facts: Callable[[RuleSet], LeadFacts]
    """The lead's facts under a rule set (its segment bands may differ)."""


@dataclass(frozen=True)
class Outcome:
    rule_id: str
    pool: str | None
    rep_id: str | None


def as_replayed(rep: Rep) -> Rep:
    """`rep` with what the router does not keep over time set aside (see the module)."""
    return replace(rep, presence="available", working_hours=None, out_of_office=(),
                   paused_until=None, open_assignments=0, last_assigned_at=None)


def simulate(
    leads: Sequence[ReplayLead], rule_set: RuleSet, pools: Mapping[str | None, Sequence[Rep]],
) -> dict[str, Outcome]:
    """Route `leads` in order under `rule_set`; `pools` holds each team's SDRs by name, and
    every SDR under None."""
    # Each rep as replayed, remade only when it is given a lead (a pool is read per lead).
    replayed = {rep.id: as_replayed(rep) for pool in pools.values() for rep in pool}
    counts: Counter[str] = Counter()
    found: dict[str, Outcome] = {}
    window_start = min((lead.offered_at for lead in leads), default=None)
    for lead in leads:
        facts = lead.facts(rule_set)
        rule = first_match(rule_set.rules, facts) if rule_set.rules else DEFAULT_RULE
        names: list[str | None] = [
            name for name in (rule.pool, rule.fallback_pool) if name] or [None]
        outcome = Outcome(rule.id, None, None)
        for name in names:
            reps = [replayed[rep.id] for rep in pools.get(name, ())]
            decision = choose_rep(reps, facts, rule.strategy, lead.offered_at, counts=counts,
                                  window_start=window_start, role="sdr")
            if decision.rep_id is not None:
                outcome = Outcome(rule.id, name or "every sdr", decision.rep_id)
                replayed[decision.rep_id] = replace(
                    replayed[decision.rep_id], last_assigned_at=lead.offered_at)
                counts[decision.rep_id] += 1
                break
        found[lead.lead_id] = outcome
    return found


def fairness_deviation(
    outcomes: Mapping[str, Outcome], pools: Mapping[str | None, Sequence[Rep]]
) -> list[dict[str, Any]]:
    """Per pool that got leads: each eligible rep's share against their weight's share, and
    the largest gap (0: exactly fair)."""
    by_pool: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes.values():
        if outcome.pool is not None and outcome.rep_id is not None:
            by_pool[outcome.pool][outcome.rep_id] += 1
    found = []
    for label, counts in sorted(by_pool.items()):
        members = [rep for rep in pools.get(None if label == "every sdr" else label, ())
                   if rep.active and rep.capacity != 0]
        weight = sum(rep.weight for rep in members) or 1.0
        total = sum(counts.values())
        gaps = {rep.id: counts[rep.id] / total - rep.weight / weight for rep in members}
        found.append({"pool": label, "leads": total,
                      "max_deviation": round(max((abs(gap) for gap in gaps.values()),
                                                 default=0.0), 4),
                      "deviation_by_rep": {rep_id: round(gap, 4) for rep_id, gap in gaps.items()}})
    return found


def compare(
    leads: Sequence[ReplayLead], current: RuleSet, draft: RuleSet,
    pools: Mapping[str | None, Sequence[Rep]], names: Mapping[str, str],
) -> dict[str, Any]:
    """The replay's answer: per rep, the leads they got (actually, under the current rules
    and under the draft); the leads that change rep or go unrouted; the fairness deviation."""
    now_outcomes = simulate(leads, current, pools)
    draft_outcomes = simulate(leads, draft, pools)
    actual = Counter(lead.actual_rep_id for lead in leads)
    under_current = Counter(o.rep_id for o in now_outcomes.values() if o.rep_id is not None)
    under_draft = Counter(o.rep_id for o in draft_outcomes.values() if o.rep_id is not None)
    rep_ids = sorted(set(actual) | set(under_current) | set(under_draft),
                     key=lambda rep_id: (names.get(rep_id, ""), rep_id))
    changed = [
        {"lead_id": lead.lead_id, "current_rep_id": now_outcomes[lead.lead_id].rep_id,
         "draft_rep_id": draft_outcomes[lead.lead_id].rep_id,
         "current_rule_id": now_outcomes[lead.lead_id].rule_id,
         "draft_rule_id": draft_outcomes[lead.lead_id].rule_id}
        for lead in leads
        if now_outcomes[lead.lead_id].rep_id != draft_outcomes[lead.lead_id].rep_id
    ]
    return {
        "leads": len(leads),
        "per_rep": [{"rep_id": rep_id, "name": names.get(rep_id), "actual": actual[rep_id],
                     "current": under_current[rep_id], "draft": under_draft[rep_id]}
                    for rep_id in rep_ids],
        "changed_rep": len(changed),
        "changed": changed[:CHANGED_LIMIT],
        "unrouted": {"current": sum(1 for o in now_outcomes.values() if o.rep_id is None),
                     "draft": sum(1 for o in draft_outcomes.values() if o.rep_id is None)},
        "unrouted_under_draft": [lead_id for lead_id, o in draft_outcomes.items()
                                 if o.rep_id is None][:CHANGED_LIMIT],
        "fairness": {"current": fairness_deviation(now_outcomes, pools),
                     "draft": fairness_deviation(draft_outcomes, pools)},
    }
