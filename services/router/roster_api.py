"""router's roster and rules endpoints: SDRs, people and their presence, teams, the roster
import (`/v1/sdrs`, `/v1/people`, `/v1/me`, `/v1/teams`, `/v1/roster/import`) and the routing
rules (`/v1/rules`). Who may call what: `services.router.api`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from services.router import (
    roster,
    roster_repository,
)
from services.router.api_dependencies import (
    ERRORS,
    PROBLEM,
    AdminDep,
    ContextDep,
    PrincipalDep,
    own_person_id,
    parse_document,
)
from services.router.rules import RuleSet
from services.router.schemas import (
    PersonCreate,
    PersonCreated,
    PersonFields,
    PersonView,
    PresenceUpdate,
    RosterDocument,
    RosterImported,
    RuleSetView,
    SdrCreate,
    TeamCreate,
    TeamView,
)
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter()


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
    return await read_person(own_person_id(principal), runtime, principal)


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
