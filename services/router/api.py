"""router's HTTP endpoints. Thin: authorise, parse, call the service in one transaction, answer.

Auth: `Authorization: Bearer <token>`, an admin token (`LEADRELAY_ADMIN_TOKEN`, checked by
`shared.auth`) or one of a person's own tokens (`tokens`). A signed `?token=` on an assignment
action works for that assignment and action only, until it expires (the links in
notifications, `action_links`); elsewhere it is no credential (`401`). Assignments a caller
may not see are a 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import yaml
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import RowMapping

from services.router import (
    assignment_actions,
    delivery_repository,
    explanations,
    reports,
    repository,
    roster,
    roster_repository,
)
from services.router.access import Principal, token_hash
from services.router.action_links import LinkCheck, check_link
from services.router.rules import RuleSet
from services.router.schemas import (
    AssignmentView,
    DecisionView,
    DeliveryView,
    DisqualifyBody,
    HandoverView,
    PersonCreate,
    PersonCreated,
    PersonFields,
    PersonView,
    PresenceUpdate,
    QualifyBody,
    QueuedLead,
    RejectBody,
    RosterDocument,
    RosterImported,
    RuleSetView,
    SdrCreate,
    TeamCreate,
    TeamView,
)
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.auth import (
    ADMIN_ROLE,
    admin_caller,
    admit,
    bearer_token,
    forbidden,
    guard_role,
    is_admin,
    unauthorized,
)
from shared.problems import ProblemError
from shared.request_types import DateTimeText

routes = APIRouter(prefix="/v1")
M = TypeVar("M", bound=BaseModel)

PROBLEM = {"description": "Problem details"}
ERRORS: dict[int | str, dict[str, Any]] = {401: PROBLEM, 403: PROBLEM, 404: PROBLEM}


def get_context(request: Request) -> RouterContext:
    context: RouterContext = request.app.state.router_context
    return context


ContextDep = Annotated[RouterContext, Depends(get_context)]


@guard_role("any")
async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=200, description="Signed action link")] = None,
) -> Principal:
    if authorization:
        value = bearer_token(request)
        if value is not None:
            if is_admin(request):
                admit(admin_caller(value))
                return Principal(kind="admin")
            async with runtime.db.reading() as session:
                person = await roster_repository.find_person_by_token(session, token_hash(value))
                if person is not None and person["active"]:
                    teams = (
                        await roster_repository.teams_managed_by(session, person["id"])
                        if person["role"] == "manager"
                        else await roster_repository.teams_of(session, person["id"])
                    )
                    admit(f"person:{person['id']}")
                    return Principal(kind="person", person_id=person["id"], role=person["role"],
                                     team_ids=frozenset(teams))
        raise unauthorized("The bearer token is not valid.")
    if token and "assignment_id" in request.path_params:
        return Principal(kind="link", action=token)
    raise unauthorized()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@guard_role(ADMIN_ROLE)
def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise forbidden("This route needs the admin token.")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def _person(principal: Principal) -> str:
    if principal.person_id is None:
        raise forbidden("This route needs a person's own token.")
    return principal.person_id


def may_see(principal: Principal, row: Mapping[Any, Any], context: RouterContext,
            action: str | None = None) -> bool:
    if principal.is_admin:
        return True
    if principal.kind == "link":
        return action is not None and principal.action is not None and check_link(
            context.action_keys, row["id"], action, principal.action, context.clock.now()
        ) is LinkCheck.VALID
    if row["sdr_id"] == principal.person_id:
        return True
    return principal.role == "manager" and row["team_id"] in principal.team_ids


def _missing(assignment_id: str) -> ProblemError:
    return ProblemError(404, "Assignment not found", f"No assignment has the id {assignment_id!r}.")


async def _visible(runtime: RuntimeDep, context: RouterContext, principal: Principal,
                   assignment_id: str, action: str | None = None) -> RowMapping:
    if principal.kind == "link" and not may_see(principal, {"id": assignment_id}, context, action):
        raise unauthorized("The link is not valid for this assignment and action.")
    async with runtime.db.reading() as session:
        row = await repository.find_assignment(session, assignment_id)
    if row is None or not may_see(principal, row, context, action):
        raise _missing(assignment_id)
    return row


def assignment_view(row: RowMapping) -> AssignmentView:
    values: dict[str, Any] = dict(row)
    values["lead"] = values.pop("lead_snapshot")
    return AssignmentView.model_validate(values)


async def parse_document(request: Request, model: type[M]) -> M:
    """A JSON or YAML (`Content-Type: application/yaml`) request body as `model`."""
    raw = await request.body()
    try:
        if "yaml" in request.headers.get("content-type", ""):
            data = yaml.safe_load(raw)
            return model.model_validate(data)
        return model.model_validate_json(raw)
    except yaml.YAMLError as error:
        raise ProblemError(422, "Invalid request", f"The YAML does not parse: {error}",
                           slug="invalid-request") from None
    except ValidationError as error:
        raise ProblemError(
            422, "Invalid request", "The document has invalid or missing fields.",
            slug="invalid-request",
            errors=[{"field": ".".join(str(part) for part in item["loc"]), "in": "body",
                     "message": item["msg"]} for item in error.errors()],
        ) from None


# The roster


@routes.post("/sdrs", status_code=status.HTTP_201_CREATED, response_model=PersonCreated,
             tags=["roster"], summary="Add an SDR (first roster API; see /v1/people)",
             responses={**ERRORS, 409: PROBLEM})
async def create_sdr(body: SdrCreate, runtime: RuntimeDep, context: ContextDep,
                     response: Response, _: AdminDep) -> PersonView:
    await context.channels.check_urls(body)
    async with runtime.db.transaction() as session:
        joined = await roster.create_sdr(session, context.clock, body, context.channels)
        view = await roster.person_view(session, joined.row, joined)
    response.headers["Location"] = f"/v1/people/{view.id}"
    return view


@routes.get("/sdrs", response_model=list[PersonView], tags=["roster"], summary="List SDRs",
            responses=ERRORS)
async def list_sdrs(runtime: RuntimeDep, _: AdminDep) -> list[PersonView]:
    async with runtime.db.reading() as session:
        rows = await roster_repository.list_sdrs(session, role="sdr")
        return [await roster.person_view(session, row) for row in rows]


@routes.post("/people", status_code=status.HTTP_201_CREATED, response_model=PersonCreated,
             tags=["roster"], summary="Add a person (SDR, AE or manager)",
             responses={**ERRORS, 409: PROBLEM, 422: PROBLEM})
async def create_person(body: PersonCreate, runtime: RuntimeDep, context: ContextDep,
                        response: Response, _: AdminDep) -> PersonView:
    """The answer holds the person's API token and webhook secret: they are not shown again."""
    await context.channels.check_urls(body)
    async with runtime.db.transaction() as session:
        joined = await roster.create_person(session, context.clock, body, context.channels)
        view = await roster.person_view(session, joined.row, joined)
    response.headers["Location"] = f"/v1/people/{view.id}"
    return view


@routes.get("/people", response_model=list[PersonView], tags=["roster"],
            summary="List the roster", responses=ERRORS)
async def list_people(runtime: RuntimeDep, _: AdminDep) -> list[PersonView]:
    async with runtime.db.reading() as session:
        rows = await roster_repository.list_sdrs(session)
        return [await roster.person_view(session, row) for row in rows]


@routes.get("/me", response_model=PersonView, tags=["roster"], summary="Who am I",
            responses=ERRORS)
async def read_me(runtime: RuntimeDep, principal: PrincipalDep) -> PersonView:
    return await read_person(_person(principal), runtime, principal)


@routes.get("/people/{person_id}", response_model=PersonView, tags=["roster"],
            summary="Read a person (admin, or the person themselves)", responses=ERRORS)
async def read_person(person_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> PersonView:
    if not principal.is_admin and principal.person_id != person_id:
        raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
    async with runtime.db.reading() as session:
        row = await roster_repository.find_sdr(session, person_id)
        if row is None:
            raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
        return await roster.person_view(session, row)


@routes.get("/sdrs/{person_id}", response_model=PersonView, tags=["roster"],
            summary="Read an SDR", responses=ERRORS)
async def read_sdr(person_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> PersonView:
    return await read_person(person_id, runtime, principal)


@routes.patch("/people/{person_id}", response_model=PersonView, tags=["roster"],
              summary="Change a person's teams, hours, OOO, capacity, channels...",
              responses={**ERRORS, 422: PROBLEM})
async def update_person(person_id: str, body: PersonFields, runtime: RuntimeDep,
                        context: ContextDep, _: AdminDep) -> PersonView:
    await context.channels.check_urls(body)
    async with runtime.db.transaction() as session:
        row = await roster.update_person(session, context.clock, person_id, body,
                                          context.channels)
        return await roster.person_view(session, row)


@routes.put("/people/{person_id}/presence", response_model=PersonView, tags=["roster"],
            summary="Set presence: available, away or offline (admin, or the person)",
            responses=ERRORS)
async def set_presence(person_id: str, body: PresenceUpdate, runtime: RuntimeDep,
                       context: ContextDep, principal: PrincipalDep) -> PersonView:
    if not principal.is_admin and principal.person_id != person_id:
        raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
    async with runtime.db.transaction() as session:
        row = await roster.update_person(session, context.clock, person_id,
                                         PersonFields(presence=body.presence), context.channels)
        return await roster.person_view(session, row)


@routes.post("/teams", status_code=status.HTTP_201_CREATED, response_model=TeamView,
             tags=["roster"], summary="Create a team (a routing pool)",
             responses={**ERRORS, 409: PROBLEM})
async def create_team(body: TeamCreate, runtime: RuntimeDep, context: ContextDep,
                      response: Response, _: AdminDep) -> TeamView:
    async with runtime.db.transaction() as session:
        row = await roster.create_team(session, context.clock, body)
        view = await roster.team_view(session, row)
    response.headers["Location"] = f"/v1/teams/{view.id}"
    return view


@routes.get("/teams", response_model=list[TeamView], tags=["roster"], summary="List teams",
            responses=ERRORS)
async def list_teams(runtime: RuntimeDep, _: AdminDep) -> list[TeamView]:
    async with runtime.db.reading() as session:
        rows = await roster_repository.list_teams(session)
        return [await roster.team_view(session, row) for row in rows]


@routes.post("/roster/import", response_model=RosterImported, tags=["roster"],
             summary="Create or update teams and people from YAML (or JSON)",
             responses={**ERRORS, 422: PROBLEM},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/yaml": {"schema": RosterDocument.model_json_schema()}}}})
async def import_roster(request: Request, runtime: RuntimeDep, context: ContextDep,
                        _: AdminDep) -> RosterImported:
    document = await parse_document(request, RosterDocument)
    for person in document.people:
        await context.channels.check_urls(person)
    async with runtime.db.transaction() as session:
        return await roster.import_roster(session, context.clock, document, context.channels)


# Rules


@routes.get("/rules", response_model=RuleSetView, tags=["rules"],
            summary="The routing rules in force and their version", responses=ERRORS)
async def read_rules(runtime: RuntimeDep, context: ContextDep, _: AdminDep) -> RuleSetView:
    async with runtime.db.reading() as session:
        version, rule_set, row = await roster.current_rules(session, context.rule_cache)
    return RuleSetView(version=version, rules=rule_set.rules, segments=rule_set.segments,
                       created_at=row["created_at"] if row else None)


@routes.put("/rules", response_model=RuleSetView, tags=["rules"],
            summary="Replace the rules (JSON or YAML); they become the next version",
            responses={**ERRORS, 422: PROBLEM},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": RuleSet.model_json_schema()},
                "application/yaml": {"schema": RuleSet.model_json_schema()}}}})
async def replace_rules(request: Request, runtime: RuntimeDep, context: ContextDep,
                        _: AdminDep) -> RuleSetView:
    rules = await parse_document(request, RuleSet)
    async with runtime.db.transaction() as session:
        row = await roster.store_rules(session, context.clock, rules)
    return RuleSetView(version=str(row["version"]), rules=rules.rules, segments=rules.segments,
                       created_at=row["created_at"])


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
    person_id = _person(principal)
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


# Reports


Since = Annotated[DateTimeText | None,
                  Query(description="Start of the period (default: 7 days ago)")]
Until = Annotated[DateTimeText | None, Query(description="End of the period (default: now)")]


def _period(context: RouterContext, since: datetime | None,
            until: datetime | None) -> tuple[datetime, datetime]:
    end = until or context.clock.now()
    start = since or end - timedelta(days=7)
    if start.tzinfo is None or end.tzinfo is None:
        raise ProblemError(422, "Invalid request", "since and until need a timezone offset.",
                           slug="invalid-request")
    return start, end


@routes.get("/reports/speed-to-lead", tags=["reports"], responses=ERRORS,
            summary="p50/p90/p99 per hop, overall and per team, rep and source")
async def speed_to_lead(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                        since: Since = None, until: Until = None) -> dict[str, Any]:
    start, end = _period(context, since, until)
    async with runtime.db.reading() as session:
        rows = await repository.assignments_between(session, start, end)
    plain = [dict(row) for row in rows]
    return {"since": start, "until": end, **reports.speed_to_lead(plain)}


@routes.get("/reports/sla", tags=["reports"], responses=ERRORS,
            summary="SLA met / breached / escalated counts and rates")
async def sla_report(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                     since: Since = None, until: Until = None) -> dict[str, Any]:
    start, end = _period(context, since, until)
    async with runtime.db.reading() as session:
        rows = await repository.assignments_between(session, start, end)
    plain = [dict(row) for row in rows]
    return {"since": start, "until": end, **reports.sla(plain)}


@routes.get("/reports/fairness", tags=["reports"], responses=ERRORS,
            summary="Actual vs target share of leads per rep, per pool the rules use")
async def fairness_report(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                          since: Since = None, until: Until = None) -> dict[str, Any]:
    """Target shares are among each pool's eligible reps (inactive or capacity 0: none)."""
    start, end = _period(context, since, until)
    async with runtime.db.reading() as session:
        rows = await repository.assignments_between(session, start, end)
        pools, names = await roster.fairness_pools(session, context.rule_cache)
    plain = [dict(row) for row in rows]
    return {"since": start, "until": end,
            **reports.fairness(plain, pools, start, end, names)}
