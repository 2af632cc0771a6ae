"""What the console shows, from router rows: offers with their clocks, "why you", the board.

Pure functions of rows and the time: no database, no request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.router import explanations, reports

AT_RISK_SHARE = 0.25
"""An offer is at risk when less than this share of its time to accept is left."""
BREACHED_SHOWN_FOR = timedelta(minutes=2)
"""How long the board keeps showing an offer that lapsed (marked breached)."""

REJECT_REASONS = {
    "wrong_territory": "Wrong territory", "wrong_language": "Wrong language",
    "wrong_segment": "Wrong segment", "at_capacity": "At capacity",
    "conflict_of_interest": "Conflict of interest", "existing_customer": "Existing customer",
    "out_of_office": "Out of office", "other": "Other",
}
DISQUALIFY_REASONS = {
    "no_budget": "No budget", "no_authority": "No authority", "no_need": "No need",
    "bad_timing": "Bad timing", "unreachable": "Unreachable", "competitor": "Competitor",
    "student_or_personal": "Student or personal", "spam": "Spam", "duplicate": "Duplicate",
    "other": "Other",
}
STATUS_WORDS = {"offered": "Waiting for you to accept", "accepted": "Accepted: make contact",
                "contacted": "Contacted: qualify or disqualify"}


def clock_state(offered_at: datetime, deadline_at: datetime, now: datetime) -> str:
    """`ok`, `at-risk` (under a quarter of the time left) or `breached`."""
    if now >= deadline_at:
        return "breached"
    total = (deadline_at - offered_at).total_seconds()
    left = (deadline_at - now).total_seconds()
    return "at-risk" if total > 0 and left < total * AT_RISK_SHARE else "ok"


def why_you(decision: Mapping[str, Any] | None, names: Mapping[str, str]) -> list[str]:
    """The decision behind an assignment in plain words (`explanations.describe_decision`):
    its summary first, then each pool tried, people named."""
    lines = explanations.describe_decision(decision or {}, names)
    return lines or ["The routing rules chose you."]


def offer_card(row: Mapping[str, Any], names: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """One assignment of the rep's inbox, as the template shows it."""
    lead: Mapping[str, Any] = row.get("lead_snapshot") or {}
    profile: Mapping[str, Any] = row.get("lead_profile") or {}
    offered = row["status"] == "offered"
    deadline = row["deadline_at"] if offered else row.get("contact_deadline_at")
    start = row["offered_at"] if offered else row.get("accepted_at") or row["offered_at"]
    facts = [(label, lead.get(key)) for label, key in (
        ("Company", "company"), ("Email", "email"), ("Phone", "phone"),
        ("Country", "country"), ("Source", "source"))]
    score = lead.get("score")
    return {
        "id": row["id"], "status": row["status"],
        "status_words": STATUS_WORDS.get(row["status"], row["status"]),
        "name": lead.get("name") or "Unnamed lead",
        "facts": [(label, value) for label, value in facts if value],
        "score": f"{score:g}" if isinstance(score, int | float) else None,
        "temperature": lead.get("temperature"),
        "score_reasons": list(profile.get("why") or []),
        "why_you": why_you(row.get("decision"), names),
        "deadline": deadline, "start": start,
        "clock": clock_state(start, deadline, now) if deadline else "ok",
        "deadline_label": "Accept before" if offered else "Contact before",
    }


def board_offer(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    lead: Mapping[str, Any] = row.get("lead_snapshot") or {}
    lapsed = row["status"] == "escalated"
    return {
        "open": not lapsed,
        "id": row["id"], "lead": lead.get("name") or "Unnamed lead",
        "company": lead.get("company"), "rep": row["rep_name"], "attempt": row["attempt"],
        "start": row["offered_at"], "deadline": row["deadline_at"],
        "clock": "breached" if lapsed else clock_state(row["offered_at"], row["deadline_at"], now),
    }


def presence_words(person: Mapping[str, Any], now: datetime) -> str:
    for period in person.get("out_of_office") or []:
        start, end = (datetime.fromisoformat(str(period[key])) for key in ("start", "end"))
        if start <= now < end:
            return f"out of office until {end:%d %b %H:%M} UTC"
    return str(person.get("presence") or "available")


def load_words(person: Mapping[str, Any]) -> str:
    capacity = person.get("capacity")
    return f"{person['load']}/{capacity}" if capacity is not None else f"{person['load']}"


def sla_today(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = reports.sla(rows)["accept"]
    return {"met": counts["met"], "breached": counts["breached"],
            "escalated": counts["escalated"]}
