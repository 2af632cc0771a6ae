"""router's business logic: keep the roster, offer leads round robin, take acceptances.

Functions here take the caller's session and never commit: the HTTP endpoint, the consumer
loop or the timer loop owns the transaction, so an assignment, its notification and its
events commit together or not at all. Every function that hands out leads first takes the
routing lock (`repository.lock_routing`), so round robin decisions never interleave.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import repository
from services.router.notifications import DeliverySignal
from services.router.routing import SdrCandidate, choose_sdr
from services.router.schemas import OfferedLead, OfferNotice, SdrCreate
from services.router.settings import RouterSettings
from shared.clock import Clock
from shared.db import new_id
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentOffered,
    AssignmentOfferedData,
    LeadScored,
)
from shared.outbox import Outbox
from shared.problems import ProblemError

PRODUCER = "router"
ROUTED_TEMPERATURES = frozenset({"hot", "warm"})


@dataclass(frozen=True)
class RouterContext:
    """What routing needs besides a session: where events go, the time, the SLA."""

    outbox: Outbox
    clock: Clock
    sla: timedelta
    public_base_url: str
    deliveries: DeliverySignal

    @classmethod
    def build(cls, settings: RouterSettings, outbox: Outbox, clock: Clock) -> RouterContext:
        return cls(
            outbox=outbox,
            clock=clock,
            sla=timedelta(seconds=settings.sla_accept_seconds),
            public_base_url=settings.public_base_url,
            deliveries=DeliverySignal(),
        )

    def accept_url(self, assignment_id: str) -> str:
        return f"{self.public_base_url}/v1/assignments/{assignment_id}/accept"


@dataclass(frozen=True)
class Offer:
    """An assignment just offered to an SDR."""

    assignment_id: str
    lead_id: str
    sdr_id: str
    attempt: int
    deadline_at: datetime


# The roster


async def create_sdr(session: AsyncSession, clock: Clock, body: SdrCreate) -> RowMapping:
    """Add an SDR to the roster; 409 when the email is already on it."""
    values = {
        **body.model_dump(),
        "webhook_url": str(body.webhook_url),
        "id": new_id(),
        "created_at": clock.now(),
        "last_assigned_at": None,
    }
    try:
        async with session.begin_nested():
            await repository.insert_sdr(session, values)
    except IntegrityError:
        raise ProblemError(
            409,
            "SDR already exists",
            f"An SDR with the email {body.email!r} is already on the roster.",
            slug="sdr-exists",
        ) from None
    created = await repository.find_sdr(session, values["id"])
    assert created is not None
    return created


# Offering leads


async def route_scored_lead(
    session: AsyncSession, context: RouterContext, event: LeadScored
) -> Offer | None:
    """Record a lead's latest score and offer it to an SDR when it is hot or warm.

    A lead that already has an active assignment keeps it (its score is still recorded). A hot
    or warm lead that finds no active SDR is kept `waiting`; the timer loop offers it as soon
    as an SDR is active. A score older than the one recorded changes nothing.
    """
    now = context.clock.now()
    await repository.lock_routing(session)
    current = await repository.find_lead(session, event.lead_id, for_update=True)
    if current is not None and current["scored_at"] > event.occurred_at:
        return None
    values: dict[str, Any] = {
        "profile": event.data.lead.model_dump(mode="json"),
        "score": event.data.score,
        "temperature": event.data.temperature,
        "scored_at": event.occurred_at,
        "updated_at": now,
    }
    if await repository.active_assignment(session, event.lead_id) is None:
        if event.data.temperature in ROUTED_TEMPERATURES:
            already_waiting = current["waiting_since"] if current is not None else None
            values.update(status="waiting", waiting_since=already_waiting or now)
        else:
            values.update(status="cold", waiting_since=None)
    if current is None:
        await repository.insert_lead(session, {"id": event.lead_id, **values})
    else:
        await repository.update_lead(session, event.lead_id, values)
    if values.get("status") != "waiting":
        return None
    sdr = choose_sdr(await repository.active_sdrs(session))
    if sdr is None:
        return None
    lead = await repository.find_lead(session, event.lead_id)
    assert lead is not None
    return await offer_lead(
        session, context, lead, sdr.id, now=now, correlation_id=event.correlation_id
    )


async def route_waiting_leads(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int
) -> list[Offer]:
    """Offer leads that found no active SDR, oldest first, now that one may be active."""
    await repository.lock_routing(session)
    waiting = await repository.claim_waiting_leads(session, limit)
    if not waiting:
        return []
    candidates = await repository.active_sdrs(session)
    offers: list[Offer] = []
    for lead in waiting:
        sdr = choose_sdr(candidates)
        if sdr is None:
            break
        offers.append(await offer_lead(session, context, lead, sdr.id, now=now))
        candidates = moved_to_back(candidates, sdr.id, now)
    return offers


def moved_to_back(
    candidates: list[SdrCandidate], sdr_id: str, now: datetime
) -> list[SdrCandidate]:
    """The roster as round robin sees it once `sdr_id` was assigned a lead at `now`."""
    return [replace(c, last_assigned_at=now) if c.id == sdr_id else c for c in candidates]


async def offer_lead(
    session: AsyncSession,
    context: RouterContext,
    lead: RowMapping,
    sdr_id: str,
    *,
    now: datetime,
    assignment_id: str | None = None,
    correlation_id: str | None = None,
) -> Offer:
    """Offer `lead` to an SDR: the assignment, its notification and `assignment.offered`."""
    sdr = await repository.find_sdr(session, sdr_id)
    if sdr is None:
        raise LookupError(f"no SDR {sdr_id}")
    offer = Offer(
        assignment_id=assignment_id or new_id(),
        lead_id=lead["id"],
        sdr_id=sdr_id,
        attempt=await repository.last_attempt(session, lead["id"]) + 1,
        deadline_at=now + context.sla,
    )
    profile: dict[str, Any] = lead["profile"]
    snapshot = {
        "name": profile.get("name"),
        "company": profile.get("company"),
        "email": profile["email"],
        "phone": profile.get("phone"),
        "score": lead["score"],
        "temperature": lead["temperature"],
    }
    await repository.insert_assignment(
        session,
        {
            "id": offer.assignment_id,
            "lead_id": offer.lead_id,
            "sdr_id": sdr_id,
            "status": "offered",
            "attempt": offer.attempt,
            "offered_at": now,
            "deadline_at": offer.deadline_at,
            "lead_snapshot": snapshot,
        },
    )
    await repository.mark_sdr_assigned(session, sdr_id, now)
    await repository.update_lead(
        session, offer.lead_id, {"status": "routed", "waiting_since": None, "updated_at": now}
    )
    notice = OfferNotice(
        assignment_id=offer.assignment_id,
        lead_id=offer.lead_id,
        sdr_id=sdr_id,
        attempt=offer.attempt,
        lead=OfferedLead.model_validate(snapshot),
        score=lead["score"],
        temperature=lead["temperature"],
        deadline_at=offer.deadline_at,
        accept_url=context.accept_url(offer.assignment_id),
    )
    await repository.insert_notification(
        session,
        {
            "assignment_id": offer.assignment_id,
            "sdr_id": sdr_id,
            "url": sdr["webhook_url"],
            "payload": notice.model_dump(mode="json"),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    context.deliveries.wake_after_commit(session)
    await context.outbox.add(
        session,
        AssignmentOffered(
            producer=PRODUCER,
            lead_id=offer.lead_id,
            correlation_id=correlation_id,
            occurred_at=now,
            data=AssignmentOfferedData(
                assignment_id=offer.assignment_id,
                sdr_id=sdr_id,
                deadline_at=offer.deadline_at,
                attempt=offer.attempt,
            ),
        ),
    )
    return offer


# Accepting


async def accept_assignment(
    session: AsyncSession, context: RouterContext, assignment_id: str
) -> RowMapping:
    """Stop the SLA clock: `offered` -> `accepted`, unless the offer already closed.

    The status check and the change are one conditional update, so an acceptance racing the
    escalation of the same offer either wins or gets a 409, never both.
    """
    now = context.clock.now()
    if not await repository.accept_offer(session, assignment_id, now):
        existing = await repository.find_assignment(session, assignment_id)
        if existing is None:
            raise ProblemError(
                404, "Assignment not found", f"No assignment has the id {assignment_id!r}."
            )
        raise ProblemError(
            409,
            "Assignment not open",
            f"This assignment is {existing['status']}; only an offered assignment can be "
            "accepted.",
            slug="assignment-not-open",
            assignment_status=existing["status"],
        )
    accepted = await repository.find_assignment(session, assignment_id)
    assert accepted is not None
    await repository.cancel_pending_notifications(session, assignment_id)
    await context.outbox.add(
        session,
        AssignmentAccepted(
            producer=PRODUCER,
            lead_id=accepted["lead_id"],
            occurred_at=now,
            data=AssignmentAcceptedData(
                assignment_id=assignment_id,
                sdr_id=accepted["sdr_id"],
                accepted_at=now,
                within_sla=now <= accepted["deadline_at"],
            ),
        ),
    )
    return accepted
