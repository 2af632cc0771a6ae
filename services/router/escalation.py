"""The SLA timer: offers nobody accepted in time move on to the next SDR.

Deadlines live in `router_assignment.deadline_at`, so a restart loses none: every
`timer_interval_seconds` the `escalation-timer` loop claims the offers whose deadline passed
and escalates each in one transaction with everything it implies. The same loop then offers
leads that were `waiting` for an active SDR. `escalate_due` and `EscalationTimer.tick` are
what a test calls, with a `ManualClock`, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.router import repository, service
from services.router.routing import escalation_target
from services.router.service import Offer, RouterContext
from shared.db import Database, is_outage, new_id
from shared.events import AssignmentEscalated, AssignmentEscalatedData

logger = logging.getLogger(__name__)

SLA_EXPIRED = "sla_expired"


@dataclass(frozen=True)
class Escalation:
    """An offer that lapsed, and where its lead went (nowhere when `to_sdr_id` is None)."""

    lead_id: str
    from_assignment_id: str
    from_sdr_id: str
    to_assignment_id: str | None
    to_sdr_id: str | None


@dataclass(frozen=True)
class Tick:
    escalations: list[Escalation] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)


async def escalate_due(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> list[Escalation]:
    """Escalate up to `limit` offers whose deadline is at or before `now`.

    Each lapsed offer becomes `escalated` through a conditional update (an acceptance that
    got there first wins), and its lead is offered to the next SDR in round robin other than
    the one who let it lapse, preferring SDRs who never had it. With nobody else active the
    lead is left `stranded` and the event says so with `to_sdr_id` None.
    """
    await repository.lock_routing(session)
    lapsed = await repository.claim_lapsed_offers(session, now, limit)
    if not lapsed:
        return []
    candidates = await repository.active_sdrs(session)
    escalations: list[Escalation] = []
    for offer in lapsed:
        if not await repository.escalate_offer(session, offer["id"], now):
            continue
        await repository.cancel_pending_notifications(session, offer["id"])
        lead_id: str = offer["lead_id"]
        target = escalation_target(
            candidates,
            lapsed_sdr_id=offer["sdr_id"],
            previous_sdr_ids=await repository.sdrs_who_had(session, lead_id),
        )
        escalated = Escalation(
            lead_id=lead_id,
            from_assignment_id=offer["id"],
            from_sdr_id=offer["sdr_id"],
            to_assignment_id=new_id() if target else None,
            to_sdr_id=target.id if target else None,
        )
        await context.outbox.add(
            session,
            AssignmentEscalated(
                producer=service.PRODUCER,
                lead_id=lead_id,
                occurred_at=now,
                data=AssignmentEscalatedData(
                    from_assignment_id=escalated.from_assignment_id,
                    from_sdr_id=escalated.from_sdr_id,
                    to_assignment_id=escalated.to_assignment_id,
                    to_sdr_id=escalated.to_sdr_id,
                    reason=SLA_EXPIRED,
                ),
            ),
        )
        if target is None:
            await repository.update_lead(
                session, lead_id, {"status": "stranded", "updated_at": now}
            )
        else:
            lead = await repository.find_lead(session, lead_id)
            assert lead is not None
            await service.offer_lead(
                session, context, lead, target.id, now=now,
                assignment_id=escalated.to_assignment_id,
            )
            candidates = service.moved_to_back(candidates, target.id, now)
        await repository.insert_escalation(
            session,
            {
                "id": new_id(),
                "lead_id": lead_id,
                "from_assignment_id": escalated.from_assignment_id,
                "to_assignment_id": escalated.to_assignment_id,
                "from_sdr_id": escalated.from_sdr_id,
                "to_sdr_id": escalated.to_sdr_id,
                "reason": SLA_EXPIRED,
                "escalated_at": now,
            },
        )
        escalations.append(escalated)
    return escalations


class EscalationTimer:
    """The `escalation-timer` background loop."""

    def __init__(
        self, db: Database, context: RouterContext, *, interval: float, batch_size: int
    ) -> None:
        self.db = db
        self.context = context
        self.interval = interval
        self.batch_size = batch_size

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.tick()
                failures = 0
            except Exception as error:
                if not is_outage(error):
                    raise
                failures += 1
                logger.warning("escalation timer: database unavailable (%s)", type(error).__name__)
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            await asyncio.sleep(self.interval)

    async def tick(self) -> Tick:
        """Escalate every lapsed offer, then offer waiting leads, in batches."""
        done = Tick()
        while True:
            async with self.db.transaction() as session:
                escalations = await escalate_due(
                    session, self.context, self.context.clock.now(), limit=self.batch_size
                )
            done.escalations.extend(escalations)
            if len(escalations) < self.batch_size:
                break
        while True:
            async with self.db.transaction() as session:
                offers = await service.route_waiting_leads(
                    session, self.context, self.context.clock.now(), limit=self.batch_size
                )
            done.offers.extend(offers)
            if len(offers) < self.batch_size:
                break
        if done.escalations or done.offers:
            self.context.outbox.wake_relay()
        return done
