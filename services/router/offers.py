"""Offering a lead to a rep: the assignment row, its notifications (webhook and Slack) and
`assignment.offered`; and handing a lead back to marketing (`lead.nurture`).

Functions here take the caller's session and never commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import delivery_repository, repository, roster, roster_repository
from services.router.channels import (
    CHANNEL_SECRET_KEYS,
    channel_secrets,
    slack_reference,
    stored,
)
from services.router.context import PRODUCER, Offer, RouterContext, Routing
from services.router.delivery_policy import notification_lease
from services.router.roster_cache import current_state
from services.router.routing import (
    Role,
    working_deadline,
)
from services.router.schemas import OfferedLead, OfferNotice
from services.router.slack_messages import slack_offer
from shared.db import new_id
from shared.events import (
    AssignmentOffered,
    AssignmentOfferedData,
    LeadNurture,
    LeadNurtureData,
)
from shared.metrics import count_after_commit
from shared.tracing import traceparent_for


async def offer_lead(
    session: AsyncSession,
    context: RouterContext,
    lead: RowMapping,
    sdr_id: str,
    *,
    now: datetime,
    routing: Routing,
    role: Role = "sdr",
    assignment_id: str | None = None,
    correlation_id: str | None = None,
    status: str = "offered",
    first: bool = False,
) -> Offer:
    """Offer `lead` to a rep: the assignment, its notifications and `assignment.offered`."""
    person = routing.people.get(sdr_id) or await roster_repository.find_sdr(session, sdr_id)
    if person is None:
        raise LookupError(f"no person {sdr_id}")
    attempt = 1 if first else await repository.last_attempt(session, lead["id"]) + 1
    offer, row, notifications, event = offer_rows(
        context, lead, person, now=now, routing=routing, role=role, attempt=attempt,
        assignment_id=assignment_id, correlation_id=correlation_id, status=status,
    )
    count_offer(session, context, routing, role)
    await repository.insert_assignment(session, row)
    await roster_repository.mark_sdr_assigned(session, sdr_id, now)
    state = current_state(session)
    if state is not None:
        state.assigned(sdr_id, now)
    await repository.update_lead(
        session, offer.lead_id, {"status": "routed", "waiting_since": None, "updated_at": now}
    )
    await queue_notifications(session, context, notifications, now)
    await context.outbox.add(session, event)
    return offer


def count_offer(
    session: AsyncSession, context: RouterContext, routing: Routing, role: Role
) -> None:
    """Count an assignment offered, once the transaction offering it commits."""
    count_after_commit(
        session, context.metrics.assignments.labels(role=role, strategy=routing.rule.strategy)
    )


def offer_rows(
    context: RouterContext,
    lead: RowMapping,
    person: RowMapping,
    *,
    now: datetime,
    routing: Routing,
    role: Role,
    attempt: int,
    assignment_id: str | None = None,
    correlation_id: str | None = None,
    status: str = "offered",
) -> tuple[Offer, dict[str, Any], list[dict[str, Any]], AssignmentOffered]:
    """What offering `lead` to `person` writes: the assignment row, its notification rows and
    `assignment.offered` (`count_offer` counts it)."""
    sdr_id: str = person["id"]
    accept_within, contact_within = context.sla(lead["temperature"], role, routing.rule)
    deadline = now + accept_within
    if routing.rule.outside_hours == "hold":
        chosen = routing.rep if routing.rep is not None and routing.rep.id == sdr_id else None
        deadline = working_deadline(
            chosen.working_hours if chosen else roster.shifts(person["working_hours"]),
            chosen.timezone if chosen else person["timezone"], now, accept_within,
        )
    offer = Offer(
        assignment_id=assignment_id or new_id(),
        lead_id=lead["id"],
        sdr_id=sdr_id,
        attempt=attempt,
        deadline_at=deadline,
    )
    profile: dict[str, Any] = lead["profile"] or {}
    snapshot = {
        "name": profile.get("name"), "company": profile.get("company"),
        "email": profile.get("email"), "phone": profile.get("phone"),
        "country": profile.get("country"), "source": profile.get("source"),
        "score": lead["score"], "temperature": lead["temperature"],
    }
    fraction = context.settings.sla_reminder_fraction
    accepted = status == "accepted"
    row = {
        "id": offer.assignment_id,
        "lead_id": offer.lead_id,
        "sdr_id": sdr_id,
        "status": status,
        "attempt": offer.attempt,
        "offered_at": now,
        "deadline_at": offer.deadline_at,
        "accepted_at": now if accepted else None,
        "contact_deadline_at": now + contact_within if accepted else None,
        "reminder_at": (
            now + (offer.deadline_at - now) * fraction if fraction and not accepted else None
        ),
        "lead_snapshot": snapshot,
        "role": role,
        "team_id": routing.team_id,
        "rule_id": routing.rule.id,
        "rules_version": routing.rules_version,
        "decision": routing.decision | {"chosen": sdr_id},
        "scored_at": lead["scored_at"],
        "source": lead["source"],
        "received_at": lead["received_at"],
    }
    notifications = [] if accepted else notification_rows(
        context, person, lead, offer, kind="offer", now=now, role=role, why_you=routing.summary)
    event = AssignmentOffered(
        producer=PRODUCER, lead_id=offer.lead_id, correlation_id=correlation_id, occurred_at=now,
        data=AssignmentOfferedData(
            assignment_id=offer.assignment_id, sdr_id=sdr_id, deadline_at=offer.deadline_at,
            attempt=offer.attempt, team_id=routing.team_id, role=role, rule_id=routing.rule.id,
            rules_version=routing.rules_version,
        ),
    )
    return offer, row, notifications, event


async def notify_person(
    session: AsyncSession,
    context: RouterContext,
    person: RowMapping,
    lead: RowMapping,
    offer: Offer,
    *,
    kind: str,
    now: datetime,
    role: str = "sdr",
    deliver_at: datetime | None = None,
    why_you: str | None = None,
) -> None:
    """Queue the offer (or a reminder, or an escalation notice) on each of the person's
    channels: the generic signed webhook and Slack; sent from `deliver_at` (default: now)."""
    rows = notification_rows(context, person, lead, offer, kind=kind, now=now, role=role,
                             deliver_at=deliver_at, why_you=why_you)
    await queue_notifications(session, context, rows, now)


ACCEPTABLE_KINDS = frozenset({"offer", "reminder"})
"""Notices about an open offer, whose `accept_url` accepts it; an escalation notice carries a
`claim_url` for the team's queue instead."""


def notification_rows(
    context: RouterContext,
    person: RowMapping,
    lead: RowMapping,
    offer: Offer,
    *,
    kind: str,
    now: datetime,
    role: str = "sdr",
    deliver_at: datetime | None = None,
    why_you: str | None = None,
) -> list[dict[str, Any]]:
    """The delivery rows of one notice to `person`, one per channel they have; `why_you`:
    the routing decision's summary, in plain words."""
    if not person["webhook_url"] and not person["slack_webhook_url"]:
        return []
    profile: dict[str, Any] = lead["profile"] or {}
    notice = OfferNotice(
        type="assignment.offered" if kind == "offer" else f"assignment.{kind}",
        kind=kind,
        timestamp=now,
        assignment_id=offer.assignment_id,
        lead_id=offer.lead_id,
        sdr_id=offer.sdr_id,
        role=role,
        attempt=offer.attempt,
        lead=OfferedLead.model_validate(profile),
        score=lead["score"],
        temperature=lead["temperature"],
        why=list(profile.get("why") or []),
        why_you=why_you,
        deadline_at=offer.deadline_at,
        accept_url=(context.action_url(offer.assignment_id, offer.deadline_at)
                    if kind in ACCEPTABLE_KINDS else None),
        claim_url=(context.claim_url(offer.lead_id, person["id"], max(now, deliver_at or now))
                   if kind == "escalation" else None),
    )
    channels: list[tuple[str, str, dict[str, Any]]] = []
    if person["webhook_url"]:
        channels.append(("generic", person["webhook_url"], notice.model_dump(mode="json")))
    if person["slack_webhook_url"]:
        slack_url = context.secrets.decrypt(person["slack_webhook_url"])
        channels.append(("slack", slack_reference(slack_url), slack_offer(notice, now)))
    return [
        {
            "assignment_id": offer.assignment_id,
            "sdr_id": person["id"],
            "url": url,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": max(now, deliver_at or now),
            "created_at": now,
            "channel": channel,
            "kind": kind,
            "message_id": f"msg_{uuid.uuid4().hex}",
            "traceparent": traceparent_for(offer.lead_id),
            # Not stored: what the delivery loop needs to send rows it is given at commit.
            **channel_secrets(person),
        }
        for channel, url, payload in channels
    ]


async def send_to_nurture(
    session: AsyncSession, context: RouterContext, lead: RowMapping, reason: str, now: datetime
) -> None:
    """Hand a lead back to marketing: `lead.nurture`, and the marketing tool's webhook."""
    event, delivery = nurture_rows(context, lead, reason, now)
    await context.outbox.add(session, event)
    if delivery is not None:
        await queue_notifications(session, context, [delivery], now)


async def queue_notifications(
    session: AsyncSession, context: RouterContext, rows: list[dict[str, Any]], now: datetime
) -> None:
    """Insert notification rows; the loop gets them when the transaction commits.

    Rows due now are inserted leased to this process and given to its loop, which sends them
    without claiming them first; rows due later (and all rows when no loop runs here) wait in
    the database for a loop to claim them."""
    if not rows:
        return
    if not context.deliveries.loop_running:
        due: list[dict[str, Any]] = []
        later = rows
    else:
        due = [row for row in rows if row["next_attempt_at"] <= now]
        later = [row for row in rows if row["next_attempt_at"] > now]
    if later:
        await delivery_repository.insert_notifications(session, [stored(row) for row in later])
        context.deliveries.wake_after_commit(session)
    if due:
        lease_until = now + notification_lease(context.settings)
        claimed = await delivery_repository.insert_claimed_notifications(
            session, [{**stored(row), "attempts": 1, "next_attempt_at": lease_until}
                      for row in due])
        for row, given in zip(claimed, due, strict=True):
            row.update({name: given[name] for name in CHANNEL_SECRET_KEYS if name in given})
        disabled = await delivery_repository.disabled_among(session, {row["url"] for row in due})
        for row in claimed:
            row["disabled"] = row["url"] in disabled
        context.deliveries.send_after_commit(session, claimed)


def nurture_rows(
    context: RouterContext, lead: RowMapping, reason: str, now: datetime
) -> tuple[LeadNurture, dict[str, Any] | None]:
    """`lead.nurture`, and the marketing tool's delivery row when it has a webhook."""
    event = LeadNurture(
        producer=PRODUCER, lead_id=lead["id"], occurred_at=now,
        data=LeadNurtureData(reason=reason, temperature=lead["temperature"], score=lead["score"]),
    )
    url = context.settings.nurture_webhook_url
    if not url:
        return event, None
    return event, {
        "assignment_id": None, "sdr_id": None, "url": url,
        "payload": {"type": "lead.nurture", "timestamp": now.isoformat(),
                    "data": {"lead_id": lead["id"], "reason": reason,
                             "temperature": lead["temperature"], "score": lead["score"],
                             "email": (lead["profile"] or {}).get("email")}},
        "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
        "channel": "generic", "kind": "nurture", "message_id": f"msg_{uuid.uuid4().hex}",
        "traceparent": traceparent_for(lead["id"]),
    }
