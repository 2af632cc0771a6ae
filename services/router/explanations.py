"""Routing decisions in plain words, for the API's `decision`, Slack's "why you", the webhook
and the console. Pure functions.

At decision time `explain_pool` turns one pool's `Decision` into sentences that name people
and compare the lead's value with the rep's ("Ben: lead speaks fr; rep speaks de"), and
`summary` says who got the lead and why in one line; both are stored with the decision, so
they tell what was true then. `describe_decision` reads a stored decision back as lines,
naming people from `names` when the decision predates these sentences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from services.router.routing import Decision, LeadFacts, Rep, local_time, next_opening

WORDED_REPS = 12
"""Reps of a pool worded one by one, of the excluded and of the eligible."""
STRATEGY_WORDS = {
    "round_robin": "round robin",
    "weighted_fairness": "weighted fairness",
    "least_loaded": "least loaded",
    "account_owner": "account owner",
    "claim": "first to claim",
}
ROLE_WORDS = {"sdr": "an SDR", "ae": "an AE", "manager": "a manager"}
CODE_WORDS = {
    "inactive": "inactive", "paused": "paused after a missed offer",
    "out_of_office": "out of office", "out_of_hours": "outside hours",
    "presence_away": "away", "presence_offline": "offline", "at_capacity": "at capacity",
    "language": "does not speak the lead's language", "territory": "does not cover its country",
    "segment": "does not take its segment", "already_had_lead": "already had this lead",
    "wrong_role": "not the role wanted",
}
"""Exclusion codes in words, without figures (decisions stored before `explained`)."""


def _listed(values: Sequence[str] | frozenset[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _day(moment: datetime, timezone: str) -> str:
    local = local_time(moment, timezone)
    return f"{local.day} {local:%b}"


def _clock(moment: datetime, timezone: str) -> str:
    return f"{local_time(moment, timezone):%a %H:%M} {timezone}"


def exclusion_text(
    reason: str, rep: Rep, lead: LeadFacts, now: datetime,
    openings: dict[tuple[int, str], str] | None = None,
) -> str:
    """One exclusion code (`routing.ExclusionReason`) in words, with the figures behind it.
    `openings` caches the next opening per schedule (reps of a team share theirs)."""
    if reason == "language":
        return f"lead speaks {lead.language}; rep speaks {_listed(rep.languages)}"
    if reason == "territory":
        return f"lead is in {lead.country}; rep covers {_listed(rep.territories)}"
    if reason == "segment":
        return f"lead is {lead.segment}; rep takes {_listed(rep.segments)}"
    if reason == "at_capacity":
        return f"at capacity {rep.open_assignments}/{rep.capacity}"
    if reason == "out_of_office":
        ends = [period.end for period in rep.out_of_office if period.start <= now < period.end]
        return f"out of office until {_day(max(ends), rep.timezone)}" if ends else "out of office"
    if reason == "out_of_hours":
        key = (id(rep.working_hours), rep.timezone)
        if openings is not None and key in openings:
            return openings[key]
        opening = next_opening(rep.working_hours, rep.timezone, now)
        text = ("outside hours; no working hours set" if opening is None
                else f"outside hours; back {_clock(opening, rep.timezone)}")
        if openings is not None:
            openings[key] = text
        return text
    if reason == "paused" and rep.paused_until is not None:
        return f"paused after a missed offer until {_clock(rep.paused_until, rep.timezone)}"
    if reason == "wrong_role":
        return f"is {ROLE_WORDS.get(rep.role, rep.role)}, not the role wanted"
    return CODE_WORDS.get(reason, reason.replace("_", " "))


def _ago(now: datetime, moment: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def figure_text(strategy: str, rep: Rep, score: float | None, now: datetime) -> str:
    """The figure a strategy compared for `rep`, labelled."""
    if strategy == "weighted_fairness" and score is not None:
        if score >= 0:
            return f"{score:.2f} leads below target share"
        return f"{-score:.2f} leads above target share"
    if strategy == "least_loaded":
        if rep.capacity:
            return f"load {rep.open_assignments}/{rep.capacity} open"
        return f"load {rep.open_assignments} open, no capacity limit"
    if rep.last_assigned_at is None:
        return "never assigned a lead yet"
    return f"last lead {_ago(now, rep.last_assigned_at)} ago"


def explain_pool(
    decision: Decision, reps: Sequence[Rep], lead: LeadFacts, now: datetime,
    names: Mapping[str, str],
) -> dict[str, Any]:
    """Plain words for one pool: each excluded rep's reasons, each eligible rep's figure.

    At most `WORDED_REPS` of each, the chosen rep first among the figures: what a person
    reads, at a cost that does not grow with the pool; the rest are counted by reason."""
    by_id = {rep.id: rep for rep in reps}
    openings: dict[tuple[int, str], str] = {}
    worded = list(islice(((rep_id, reasons) for rep_id, reasons in decision.excluded.items()
                          if rep_id in by_id), WORDED_REPS))
    excluded = {
        rep_id: "; ".join(exclusion_text(reason, by_id[rep_id], lead, now, openings)
                          for reason in reasons)
        for rep_id, reasons in worded
    }
    eligible = sorted((rep for rep in reps if rep.id not in decision.excluded),
                      key=lambda rep: rep.id != decision.rep_id)
    figures = {
        rep.id: figure_text(decision.strategy, rep, decision.scores.get(rep.id), now)
        for rep in eligible[:WORDED_REPS]
    }
    lines = [f"{names.get(rep_id, rep_id)}: {text}" for rep_id, text in excluded.items()]
    unworded = Counter(reason for rep_id, reasons in decision.excluded.items()
                       if rep_id not in excluded for reason in reasons)
    if unworded:
        counted = ", ".join(f"{CODE_WORDS.get(reason, reason)} {count}"
                            for reason, count in unworded.most_common())
        lines.append(f"{len(decision.excluded) - len(excluded)} more excluded: {counted}")
    lines += [f"{names.get(rep_id, rep_id)}: {text}" for rep_id, text in figures.items()]
    return {"excluded": excluded, "figures": figures, "lines": lines}


def summary(
    chosen: str | None, rule_id: str, strategy: str, tie_break: str, figure: str | None,
    names: Mapping[str, str],
) -> str:
    """Who got the lead and why, in one line."""
    how = STRATEGY_WORDS.get(strategy, strategy.replace("_", " "))
    if chosen is None:
        return f"Nobody was eligible under rule {rule_id} ({how})."
    because = f"{tie_break}; {figure}" if figure else tie_break
    return f"{names.get(chosen, chosen)} got the lead by rule {rule_id} ({how}: {because})."


def describe_decision(decision: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """A stored decision as lines a manager can read: the summary, then each pool tried with
    its exclusions and figures (codes made words, people named, for older decisions)."""
    lines: list[str] = []
    if decision.get("summary"):
        lines.append(str(decision["summary"]))
    for pool in decision.get("pools", []):
        label = pool.get("pool", "pool")
        if pool.get("skipped"):
            lines.append(f"{label}: skipped ({pool['skipped']})")
            continue
        explained = pool.get("explained")
        if explained:
            lines.extend(f"{label} · {line}" for line in explained.get("lines", []))
            continue
        for rep_id, reasons in (pool.get("excluded") or {}).items():
            words = "; ".join(CODE_WORDS.get(str(reason), str(reason)) for reason in reasons)
            lines.append(f"{label} · {names.get(rep_id, rep_id)}: {words}")
    if not lines and decision.get("chosen"):
        lines.append(f"{names.get(decision['chosen'], decision['chosen'])} got the lead.")
    return lines
