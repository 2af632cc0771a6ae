"""Qualified leads that found no eligible AE: the timer loop tries their hand-over again.

`assignment_actions.qualify` routes a qualified lead to the AE pool at once (and `reject` to
the next AE when one turns it down); when nobody is eligible it leaves a `waiting` row in
`router_handover` and tells the manager once (`wait_for_ae`). `retry_handovers` claims the
rows that are due, tries again and, with still nobody, logs why and waits longer
(`handover_delay`). The AE who finally gets the lead sees every earlier attempt in the
decision (`earlier_attempts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import delivery_repository, repository, roster_repository, service
from services.router.offers import notify_person, offer_lead
from services.router.service import Offer, RouterContext, Routing
from services.router.settings import RouterSettings
from shared.db import new_id


async def retry_handovers(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> list[Offer]:
    """Try the hand-overs due at `now` again; the offers made to AEs."""
    due = await delivery_repository.claim_due_handovers(session, now, limit)
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
            await delivery_repository.update_handover(session, row["id"], {
                "status": "closed", "next_attempt_at": None, "last_attempt_at": moment})
            continue
        attempts = int(row["attempts"]) + 1
        # Never back to an AE who already had it (and turned it down).
        had = frozenset(await repository.sdrs_who_had(session, row["lead_id"]))
        rep_id, routing = await service.decide(session, context, lead, moment, role="ae",
                                               exclude=had)
        if rep_id is None:
            await delivery_repository.update_handover(session, row["id"], {
                "attempts": attempts, "last_attempt_at": moment,
                "next_attempt_at": moment + handover_delay(attempts, context.settings),
                "attempt_log": append_attempt(
                    list(row["attempt_log"]), handover_attempt(routing, moment)),
            })
            continue
        routing.earlier_attempts = list(row["attempt_log"])
        offer = await offer_lead(session, context, lead, rep_id, now=moment,
                                         routing=routing, role="ae")
        await delivery_repository.update_handover(session, row["id"], {
            "status": "offered", "attempts": attempts, "last_attempt_at": moment,
            "next_attempt_at": None, "assignment_id": offer.assignment_id, "handed_at": moment,
        })
        offers.append(offer)
    return offers


HANDOVER_LOG_LIMIT = 50
"""Attempts kept in a hand-over's log: the first one and the latest ones."""


def handover_delay(attempts: int, settings: RouterSettings) -> timedelta:
    """How long a hand-over waits before its next try: doubling from
    `handover_retry_seconds`, never more than `handover_max_retry_seconds`."""
    seconds = settings.handover_retry_seconds * 2 ** min(max(attempts - 1, 0), 32)
    return timedelta(seconds=min(seconds, settings.handover_max_retry_seconds))


def handover_attempt(routing: Routing, now: datetime) -> dict[str, Any]:
    """One entry of a hand-over's log: when it was tried and why nobody was eligible."""
    return {"at": now.isoformat(), "rules_version": routing.rules_version,
            "rule_id": routing.rule.id, "pools": routing.pools}


def append_attempt(log: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    log = [*log, entry]
    if len(log) > HANDOVER_LOG_LIMIT:
        log = [log[0], *log[-(HANDOVER_LOG_LIMIT - 1):]]
    return log


async def wait_for_ae(
    session: AsyncSession, context: RouterContext, lead: RowMapping, qualified: RowMapping,
    routing: Routing, now: datetime,
) -> None:
    """No AE is eligible for a qualified lead: the hand-over is kept, for the timer loop to
    try again with a growing delay, and the manager is told once that it waits."""
    await repository.update_lead(session, lead["id"], {"status": "qualified",
                                                       "waiting_since": now, "updated_at": now})
    team_ids = [pool["team_id"] for pool in routing.pools if pool.get("team_id")]
    team_ids.append(qualified["team_id"])
    notified_at = None
    for team_id in team_ids:
        team = await roster_repository.find_team(session, team_id) if team_id else None
        manager = (await roster_repository.find_sdr(session, team["manager_id"])
                   if team is not None and team["manager_id"] else None)
        if manager is not None:
            await notify_person(session, context, manager, lead, Offer(
                qualified["id"], lead["id"], qualified["sdr_id"], qualified["attempt"],
                now + handover_delay(1, context.settings),
            ), kind="handover_waiting", now=now, role="ae")
            notified_at = now
            break
    await delivery_repository.insert_handover(session, {
        "id": new_id(), "lead_id": lead["id"], "from_assignment_id": qualified["id"],
        "status": "waiting", "requested_at": now, "attempts": 1, "last_attempt_at": now,
        "next_attempt_at": now + handover_delay(1, context.settings),
        "manager_notified_at": notified_at, "attempt_log": [handover_attempt(routing, now)],
    })
