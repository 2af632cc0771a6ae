"""router's assignment endpoints: reading assignments, their decision and deliveries, what
reps do with them (accept, contacted, qualify, reject, disqualify), the shared queue and its
claims, and hand-overs. Who may call what: `services.router.api`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.engine import RowMapping

from services.router import (
    assignment_actions,
    delivery_repository,
    explanations,
    repository,
    roster,
    roster_repository,
)
from services.router.access import Principal
from services.router.api_dependencies import (
    ERRORS,
    PROBLEM,
    AdminDep,
    ContextDep,
    PrincipalDep,
    may_see,
    own_person_id,
)
from services.router.schemas import (
    AssignmentView,
    DecisionView,
    DeliveryView,
    DisqualifyBody,
    HandoverView,
    QualifyBody,
    QueuedLead,
    RejectBody,
)
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.auth import (
    unauthorized,
)
from shared.problems import ProblemError

routes = APIRouter()


def _missing(assignment_id: str) -> ProblemError:
    return ProblemError(404, "Assignment not found", f"No assignment has the id {assignment_id!r}.")


async def _visible(runtime: RuntimeDep, context: RouterContext, principal: Principal,
                   assignment_id: str, action: str | None = None) -> RowMapping:
    # A link principal was checked for this assignment and action already (`get_principal`).
    async with runtime.db.reading() as session:
        row = await repository.find_assignment(session, assignment_id)
    if row is None or not may_see(principal, row, context, action):
        raise _missing(assignment_id)
    return row


def assignment_view(row: RowMapping) -> AssignmentView:
    values: dict[str, Any] = dict(row)
    values["lead"] = values.pop("lead_snapshot")
    return AssignmentView.model_validate(values)


# Assignments


@routes.get("/assignments", response_model=list[AssignmentView], tags=["assignments"],
            summary="Assignments the caller may see, newest first", responses=ERRORS)
async def list_assignments(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    lead_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AssignmentView]:
    """Admin: all; a manager: their own and their teams'; a rep: their own."""
    if principal.kind == "link":
        raise unauthorized()
    scope: dict[str, Any] = {}
    if not principal.is_admin:
        scope["person_ids"] = [principal.person_id]
        scope["team_ids"] = list(principal.team_ids) if principal.role == "manager" else []
    async with runtime.db.reading() as session:
        rows = await repository.list_assignments(session, lead_id=lead_id, limit=limit, **scope)
    return [assignment_view(row) for row in rows]


@routes.get("/assignments/{assignment_id}", response_model=AssignmentView,
            tags=["assignments"], summary="Read an assignment", responses=ERRORS)
async def read_assignment(assignment_id: str, runtime: RuntimeDep, context: ContextDep,
                          principal: PrincipalDep) -> AssignmentView:
    return assignment_view(await _visible(runtime, context, principal, assignment_id))


@routes.get("/assignments/{assignment_id}/decision", response_model=DecisionView,
            tags=["assignments"], summary="Why this rep got this lead", responses=ERRORS)
async def read_decision(assignment_id: str, runtime: RuntimeDep, context: ContextDep,
                        principal: PrincipalDep) -> DecisionView:
    """The rule matched and its version, each pool tried with its candidates, every excluded
    rep with the reasons, the figures the strategy compared, and the tie-break; `summary`
    and `explained` say it in plain words, people named."""
    row = await _visible(runtime, context, principal, assignment_id)
    decision: dict[str, Any] = row["decision"] or {}
    async with runtime.db.reading() as session:
        names = {person["id"]: person["name"]
                 for person in await roster_repository.list_sdrs(session)}
    return DecisionView(assignment_id=assignment_id, rule_id=row["rule_id"],
                        rules_version=row["rules_version"], pools=decision.get("pools", []),
                        chosen=row["sdr_id"], summary=decision.get("summary"),
                        explained=explanations.describe_decision(decision, names),
                        earlier_attempts=decision.get("earlier_attempts", []))


@routes.get("/assignments/{assignment_id}/deliveries", response_model=list[DeliveryView],
            tags=["assignments"], summary="Notifications sent for it, with every attempt",
            responses=ERRORS)
async def read_deliveries(assignment_id: str, runtime: RuntimeDep, context: ContextDep,
                          principal: PrincipalDep) -> list[DeliveryView]:
    await _visible(runtime, context, principal, assignment_id)
    async with runtime.db.reading() as session:
        rows = await delivery_repository.find_notifications(session, assignment_id)
        attempts = await delivery_repository.find_attempts(session, [row["id"] for row in rows])
    log: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        entry = dict(attempt)
        log.setdefault(entry.pop("notification_id"), []).append(entry)
    return [DeliveryView.model_validate({**dict(row), "log": log.get(row["id"], [])})
            for row in rows]


async def _act(runtime: RuntimeDep, context: RouterContext, principal: Principal,
               assignment_id: str, action: str) -> None:
    row = await _visible(runtime, context, principal, assignment_id, action)
    if principal.kind == "person" and row["sdr_id"] != principal.person_id:
        raise _missing(assignment_id)


@routes.post("/assignments/{assignment_id}/accept", response_model=AssignmentView,
             tags=["assignments"], summary="Accept an offered lead (stops the accept clock)",
             responses={**ERRORS, 409: PROBLEM})
async def accept_assignment(assignment_id: str, runtime: RuntimeDep, context: ContextDep,
                            principal: PrincipalDep) -> AssignmentView:
    """Too late once the offer was escalated: the answer is then `409`."""
    await _act(runtime, context, principal, assignment_id, "accept")
    async with runtime.db.transaction() as session:
        row = await assignment_actions.accept_assignment(session, context, assignment_id)
    return assignment_view(row)


@routes.post("/assignments/{assignment_id}/contacted", response_model=AssignmentView,
             tags=["assignments"], summary="First touch made (stops the contact clock)",
             responses={**ERRORS, 409: PROBLEM})
async def mark_contacted(assignment_id: str, runtime: RuntimeDep, context: ContextDep,
                         principal: PrincipalDep) -> AssignmentView:
    await _act(runtime, context, principal, assignment_id, "contacted")
    async with runtime.db.transaction() as session:
        row = await assignment_actions.mark_contacted(session, context, assignment_id)
    return assignment_view(row)


@routes.post("/assignments/{assignment_id}/qualify", response_model=AssignmentView,
             tags=["assignments"], summary="Qualified (SQL, with BANT): handed to an AE",
             responses={**ERRORS, 409: PROBLEM})
async def qualify(assignment_id: str, body: QualifyBody, runtime: RuntimeDep,
                  context: ContextDep, principal: PrincipalDep) -> AssignmentView:
    await _act(runtime, context, principal, assignment_id, "qualify")
    async with runtime.db.transaction() as session:
        row, _ = await assignment_actions.qualify(session, context, assignment_id, body.bant)
        row = await assignment_actions.require_assignment(session, assignment_id)
    return assignment_view(row)


@routes.post("/assignments/{assignment_id}/reject", response_model=AssignmentView,
             tags=["assignments"], summary="Turn a lead down (reason code required)",
             responses={**ERRORS, 409: PROBLEM})
async def reject(assignment_id: str, body: RejectBody, runtime: RuntimeDep,
                 context: ContextDep, principal: PrincipalDep) -> AssignmentView:
    """The lead is offered to the next eligible rep at once."""
    await _act(runtime, context, principal, assignment_id, "reject")
    async with runtime.db.transaction() as session:
        row, _ = await assignment_actions.reject(session, context, assignment_id, body.reason_code,
                                      body.note)
    return assignment_view(row)


@routes.post("/assignments/{assignment_id}/disqualify", response_model=AssignmentView,
             tags=["assignments"], summary="Not a fit (reason code): back to nurturing",
             responses={**ERRORS, 409: PROBLEM})
async def disqualify(assignment_id: str, body: DisqualifyBody, runtime: RuntimeDep,
                     context: ContextDep, principal: PrincipalDep) -> AssignmentView:
    await _act(runtime, context, principal, assignment_id, "disqualify")
    async with runtime.db.transaction() as session:
        row = await assignment_actions.disqualify(session, context, assignment_id, body.reason_code,
                                       body.note)
    return assignment_view(row)


# The shared queue


@routes.get("/queue", response_model=list[QueuedLead], tags=["queue"],
            summary="Leads waiting in the shared queue of the caller's teams", responses=ERRORS)
async def read_queue(runtime: RuntimeDep, context: ContextDep,
                     principal: PrincipalDep) -> list[QueuedLead]:
    """Each lead says when its team is next at work (`team_opens_at`)."""
    now = context.clock.now()
    async with runtime.db.reading() as session:
        teams = {row["id"]: row for row in await roster_repository.list_teams(session)}
        team_ids = list(teams) if principal.is_admin else list(principal.team_ids)
        rows = await repository.queued_leads(session, team_ids)
    return [QueuedLead.model_validate({
        **dict(row), "lead_id": row["id"], "team_id": row["queue_team_id"],
        "team_opens_at": roster.team_hours(teams.get(row["queue_team_id"])).next_opening(now),
    }) for row in rows]


@routes.post("/queue/{lead_id}/claim", response_model=AssignmentView, tags=["queue"],
             summary="Claim a queued lead: the first rep to claim it gets it",
             responses={**ERRORS, 409: PROBLEM})
async def claim(lead_id: str, runtime: RuntimeDep, context: ContextDep,
                principal: PrincipalDep) -> AssignmentView:
    person_id = own_person_id(principal)
    async with runtime.db.reading() as session:
        teams = await assignment_actions.claimable_teams(session, person_id)
    async with runtime.db.transaction() as session:
        row = await assignment_actions.claim_from_queue(session, context, lead_id, person_id, teams)
    return assignment_view(row)


# Hand-overs


@routes.get("/handovers", response_model=list[HandoverView], tags=["assignments"],
            summary="Qualified leads' hand-overs to AEs, the waiting ones and the done ones",
            responses=ERRORS)
async def list_handovers(
    runtime: RuntimeDep, _: AdminDep,
    status: Annotated[str | None, Query(pattern="^(waiting|offered|closed)$")] = None,
    lead_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[HandoverView]:
    """A waiting hand-over is tried again by the timer loop, with a growing delay, until an
    AE is eligible; its log says why nobody was, each time."""
    async with runtime.db.reading() as session:
        rows = await delivery_repository.list_handovers(session, status=status, lead_id=lead_id)
    return [HandoverView.model_validate(dict(row)) for row in rows]
