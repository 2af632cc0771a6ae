"""Qualified leads that found no eligible AE: the timer loop tries their hand-over again.

`service.qualify` routes a qualified lead to the AE pool at once (and `service.reject` to the
next AE when one turns it down); when nobody is eligible it leaves a `waiting` row in
`router_handover` and tells the manager once. `retry_handovers` claims the rows that are
due, tries again and, with still nobody, logs why and waits longer
(`service.handover_delay`). The AE who finally gets the lead sees every earlier attempt in
the decision (`earlier_attempts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.router import repository, service
from services.router.service import Offer, RouterContext


async def retry_handovers(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> list[Offer]:
    """Try the hand-overs due at `now` again; the offers made to AEs."""
    due = await repository.claim_due_handovers(session, now, limit)
    if not due:
        return []
    await repository.lock_routing(session)
    offers: list[Offer] = []
    for index, row in enumerate(due):
        # One microsecond apart, so round robin sees the batch's offers in order.
        moment = now + timedelta(microseconds=index)
        lead = await repository.find_lead(session, row["lead_id"])
        if (lead is None or lead["status"] != "qualified"
                or await repository.active_assignment(session, row["lead_id"]) is not None):
            await repository.update_handover(session, row["id"], {
                "status": "closed", "next_attempt_at": None, "last_attempt_at": moment})
            continue
        attempts = int(row["attempts"]) + 1
        # Never back to an AE who already had it (and turned it down).
        had = frozenset(await repository.sdrs_who_had(session, row["lead_id"]))
        rep_id, routing = await service.decide(session, context, lead, moment, role="ae",
                                               exclude=had)
        if rep_id is None:
            await repository.update_handover(session, row["id"], {
                "attempts": attempts, "last_attempt_at": moment,
                "next_attempt_at": moment + service.handover_delay(attempts, context.settings),
                "attempt_log": service.append_attempt(
                    list(row["attempt_log"]), service.handover_attempt(routing, moment)),
            })
            continue
        routing.earlier_attempts = list(row["attempt_log"])
        offer = await service.offer_lead(session, context, lead, rep_id, now=moment,
                                         routing=routing, role="ae")
        await repository.update_handover(session, row["id"], {
            "status": "offered", "attempts": attempts, "last_attempt_at": moment,
            "next_attempt_at": None, "assignment_id": offer.assignment_id, "handed_at": moment,
        })
        offers.append(offer)
    return offers
