"""What reps do with an assignment: accept, mark contacted, qualify (then hand over to an AE),
reject, disqualify, claim from the team's queue; and the erasure of a lead.

Every state change is a conditional update from the state it expects, so of two racing
changes exactly one wins; functions take the caller's session and never commit."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import delivery_repository, repository, roster, roster_repository
from services.router.context import PRODUCER, Offer, RouterContext, Routing
from services.router.handover import wait_for_ae
from services.router.models import INBOX
from services.router.offers import offer_lead, send_to_nurture
from services.router.roster_cache import routing_state
from services.router.rules import QUEUE_CLAIM_RULE_ID, Rule
from services.router.service import route_lead
from shared.erasure import erase_delivery_records
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentContacted,
    AssignmentContactedData,
    AssignmentDisqualified,
    AssignmentDisqualifiedData,
    AssignmentQualified,
    AssignmentQualifiedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Bant,
)
from shared.metrics import count_after_commit
from shared.problems import ProblemError

# What reps do with an assignment


def _not_open(existing: RowMapping, action: str, allowed: str) -> ProblemError:
    return ProblemError(
        409, "Assignment not open",
        f"This assignment is {existing['status']}; only an {allowed} assignment can be "
        f"{action}.",
        slug="assignment-not-open", assignment_status=existing["status"],
    )


async def require_assignment(session: AsyncSession, assignment_id: str) -> RowMapping:
    found = await repository.find_assignment(session, assignment_id)
    if found is None:
        raise ProblemError(
            404, "Assignment not found", f"No assignment has the id {assignment_id!r}."
        )
    return found


async def accept_assignment(
    session: AsyncSession, context: RouterContext, assignment_id: str
) -> RowMapping:
    """Stop the accept clock: `offered` -> `accepted`, unless the offer already closed.

    The status check and the change are one conditional update, so an acceptance racing the
    escalation of the same offer either wins or gets a 409, never both.
    """
    now = context.clock.now()
    existing = await require_assignment(session, assignment_id)
    lead = await repository.find_lead(session, existing["lead_id"])
    assert lead is not None
    _, contact_within = context.sla(lead["temperature"], existing["role"], None)
    rule = await _rule_of(session, context, existing)
    if rule is not None:
        _, contact_within = context.sla(lead["temperature"], existing["role"], rule)
    if not await repository.transition(session, assignment_id, from_status="offered", values={
        "status": "accepted", "accepted_at": now, "reminder_at": None,
        "contact_deadline_at": now + contact_within,
    }):
        raise _not_open(await require_assignment(session, assignment_id), "accepted", "offered")
    accepted = await require_assignment(session, assignment_id)
    await delivery_repository.cancel_pending_notifications(session, assignment_id)
    account_key = (lead["profile"] or {}).get("account_key")
    if account_key:
        await roster_repository.claim_account(session, account_key, accepted["sdr_id"], now)
    within = now <= accepted["deadline_at"]
    if not within:
        count_after_commit(session, context.metrics.sla_breaches.labels(deadline="accept"))
    await context.outbox.add(session, AssignmentAccepted(
        producer=PRODUCER, lead_id=accepted["lead_id"], occurred_at=now,
        data=AssignmentAcceptedData(assignment_id=assignment_id, sdr_id=accepted["sdr_id"],
                                    accepted_at=now, within_sla=within),
    ))
    return accepted


async def _rule_of(
    session: AsyncSession, context: RouterContext, row: RowMapping
) -> Rule | None:
    version, rule_set, _ = await roster.current_rules(session, context.rule_cache)
    if version != row["rules_version"]:
        return None
    return next((rule for rule in rule_set.rules if rule.id == row["rule_id"]), None)


async def mark_contacted(
    session: AsyncSession, context: RouterContext, assignment_id: str
) -> RowMapping:
    """First touch: `accepted` -> `contacted`."""
    now = context.clock.now()
    if not await repository.transition(session, assignment_id, from_status="accepted",
                                       values={"status": "contacted", "contacted_at": now}):
        raise _not_open(
            await require_assignment(session, assignment_id), "marked contacted", "accepted")
    row = await require_assignment(session, assignment_id)
    deadline = row["contact_deadline_at"]
    await context.outbox.add(session, AssignmentContacted(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentContactedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                     contacted_at=now,
                                     within_sla=deadline is None or now <= deadline),
    ))
    return row


async def qualify(
    session: AsyncSession, context: RouterContext, assignment_id: str, bant: Bant
) -> tuple[RowMapping, Offer | None]:
    """SQL: `contacted` (or `accepted`) -> `qualified`, then the lead is routed to an AE."""
    now = context.clock.now()
    existing = await require_assignment(session, assignment_id)
    if existing["role"] != "sdr":
        raise ProblemError(409, "Not an SDR assignment",
                           "Only an SDR's assignment is qualified and handed to an AE.",
                           slug="not-sdr-assignment")
    values = {"status": "qualified", "qualified_at": now, "closed_at": now,
              "bant": bant.model_dump(mode="json")}
    done = await repository.transition(session, assignment_id, from_status="contacted",
                                       values=values)
    if not done:
        done = await repository.transition(session, assignment_id, from_status="accepted",
                                           values=values | {"contacted_at": now})
    if not done:
        raise _not_open(
            await require_assignment(session, assignment_id), "qualified", "accepted or contacted"
        )
    row = await require_assignment(session, assignment_id)
    await context.outbox.add(session, AssignmentQualified(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentQualifiedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                     qualified_at=now, bant=bant),
    ))
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    routing = await route_lead(session, context, lead, now, role="ae")
    if routing.offer is None:
        await wait_for_ae(session, context, lead, row, routing, now)
    return row, routing.offer


async def reject(
    session: AsyncSession, context: RouterContext, assignment_id: str, reason_code: str,
    note: str | None,
) -> tuple[RowMapping, Offer | None]:
    """The rep turns the lead down: it is offered at once to the next rep (never them)."""
    now = context.clock.now()
    if not await repository.transition(session, assignment_id, from_status="offered", values={
        "status": "rejected", "closed_at": now, "reason_code": reason_code, "note": note,
        "reminder_at": None,
    }):
        raise _not_open(await require_assignment(session, assignment_id), "rejected", "offered")
    row = await require_assignment(session, assignment_id)
    await delivery_repository.cancel_pending_notifications(session, assignment_id)
    await context.outbox.add(session, AssignmentRejected(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentRejectedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                    reason_code=reason_code, note=note),
    ))
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    if lead["status"] == "erased":
        return row, None
    exclude = frozenset(await repository.sdrs_who_had(session, lead["id"]))
    routing = await route_lead(session, context, lead, now, role=row["role"], exclude=exclude)
    if routing.offer is None and row["role"] == "ae":
        await wait_for_ae(session, context, lead, row, routing, now)
    return row, routing.offer


async def disqualify(
    session: AsyncSession, context: RouterContext, assignment_id: str, reason_code: str,
    note: str | None,
) -> RowMapping:
    """Not a fit: the assignment closes and the lead is recycled to nurturing."""
    now = context.clock.now()
    values = {"status": "disqualified", "closed_at": now, "reason_code": reason_code,
              "note": note, "reminder_at": None}
    for status in ("accepted", "contacted"):
        if await repository.transition(session, assignment_id, from_status=status, values=values):
            break
    else:
        raise _not_open(await require_assignment(session, assignment_id), "disqualified",
                        "accepted or contacted")
    row = await require_assignment(session, assignment_id)
    await context.outbox.add(session, AssignmentDisqualified(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentDisqualifiedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                        reason_code=reason_code, note=note),
    ))
    await repository.update_lead(session, row["lead_id"], {"status": "disqualified",
                                                           "waiting_since": None,
                                                           "updated_at": now})
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    await send_to_nurture(session, context, lead, f"disqualified:{reason_code}", now)
    return row


async def claim_from_queue(
    session: AsyncSession, context: RouterContext, lead_id: str, person_id: str,
    team_ids: frozenset[str],
) -> RowMapping:
    """The first rep to claim a lead from their team's shared queue gets it, accepted.

    A later claim by someone of the team gets a 409 naming who claimed it; a lead that was
    never in a queue of `team_ids` is a 404."""
    now = context.clock.now()
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, lead_id)
    if lead is None or lead["queue_team_id"] not in team_ids:
        await _refuse_claim(session, lead_id, team_ids)
    if not await repository.take_from_queue(session, lead_id, now):
        await _refuse_claim(session, lead_id, team_ids)
    version, _, _ = await roster.current_rules(session, context.rule_cache)
    routing = Routing(offer=None, rule=Rule(id=QUEUE_CLAIM_RULE_ID), rules_version=version,
                      team_id=lead["queue_team_id"],
                      pools=[{"pool": "shared queue", "team_id": lead["queue_team_id"],
                              "candidates": [person_id], "excluded": {}, "scores": {},
                              "tie_break": "first to claim", "strategy": "claim",
                              "rep_id": person_id, "note": ""}])
    claimer = await roster_repository.find_sdr(session, person_id)
    routing.summary = (f"{claimer['name'] if claimer else person_id} claimed the lead from the "
                       "team's shared queue (first to claim).")
    offer = await offer_lead(session, context, lead, person_id, now=now, routing=routing,
                             status="accepted")
    row = await require_assignment(session, offer.assignment_id)
    await context.outbox.add(session, AssignmentAccepted(
        producer=PRODUCER, lead_id=lead_id, occurred_at=now,
        data=AssignmentAcceptedData(assignment_id=offer.assignment_id, sdr_id=person_id,
                                    accepted_at=now, within_sla=False),
    ))
    return row


async def claimable_teams(session: AsyncSession, person_id: str) -> frozenset[str]:
    """The teams whose queue `person_id` may claim from: theirs, and those they manage."""
    return frozenset([*await roster_repository.teams_of(session, person_id),
                      *await roster_repository.teams_managed_by(session, person_id)])


async def _refuse_claim(session: AsyncSession, lead_id: str, team_ids: frozenset[str]) -> NoReturn:
    """409 naming who claimed the lead when someone of these teams did, else 404."""
    latest = await repository.latest_assignment(session, lead_id)
    claimed = (latest is not None and latest["rule_id"] == QUEUE_CLAIM_RULE_ID
               and latest["team_id"] in team_ids)
    if claimed and latest is not None:
        winner = await roster_repository.find_sdr(session, latest["sdr_id"])
        name = winner["name"] if winner is not None else "another rep"
        raise ProblemError(409, "Already claimed", f"Already claimed by {name}.",
                           slug="already-claimed", claimed_by=latest["sdr_id"],
                           claimed_by_name=name, assignment_id=latest["id"])
    raise ProblemError(404, "Lead not in your queue",
                       f"No lead {lead_id!r} waits in a queue of your teams.")


async def erase_lead(session: AsyncSession, context: RouterContext, lead_id: str) -> None:
    """Right to erasure: the lead's personal data leaves router's tables, its open assignment
    is closed and it is never offered again; its published events and dead letters go."""
    await repository.erase_lead(session, lead_id, context.clock.now())
    await erase_delivery_records(session, lead_id, outbox=context.outbox.tables, inbox=INBOX)
    if context.keyring is not None:
        context.keyring.forget(lead_id)
    if context.scrubber is not None:
        context.scrubber.after_commit(session)
