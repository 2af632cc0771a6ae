"""router's HTTP endpoints. Thin: parse, call the service in one transaction, answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.engine import RowMapping

from services.router import repository, service
from services.router.schemas import AssignmentView, SdrCreate, SdrView
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1")


def get_context(request: Request) -> RouterContext:
    context: RouterContext = request.app.state.router_context
    return context


ContextDep = Annotated[RouterContext, Depends(get_context)]


def assignment_view(row: RowMapping) -> AssignmentView:
    values: dict[str, Any] = dict(row)
    values["lead"] = values.pop("lead_snapshot")
    return AssignmentView.model_validate(values)


@routes.post(
    "/sdrs",
    status_code=status.HTTP_201_CREATED,
    response_model=SdrView,
    tags=["sdrs"],
    summary="Add an SDR to the roster",
    responses={409: {"description": "An SDR with this email exists (problem details)"}},
)
async def create_sdr(body: SdrCreate, runtime: RuntimeDep, response: Response) -> SdrView:
    """An active SDR takes part in round robin from the next lead on."""
    async with runtime.db.transaction() as session:
        row = await service.create_sdr(session, runtime.clock, body)
    response.headers["Location"] = f"/v1/sdrs/{row['id']}"
    return SdrView.model_validate(dict(row))


@routes.get("/sdrs", response_model=list[SdrView], tags=["sdrs"], summary="List the roster")
async def list_sdrs(runtime: RuntimeDep) -> list[SdrView]:
    async with runtime.db.reading() as session:
        rows = await repository.list_sdrs(session)
    return [SdrView.model_validate(dict(row)) for row in rows]


@routes.get("/sdrs/{sdr_id}", response_model=SdrView, tags=["sdrs"], summary="Read an SDR")
async def read_sdr(sdr_id: str, runtime: RuntimeDep) -> SdrView:
    async with runtime.db.reading() as session:
        row = await repository.find_sdr(session, sdr_id)
    if row is None:
        raise ProblemError(404, "SDR not found", f"No SDR has the id {sdr_id!r}.")
    return SdrView.model_validate(dict(row))


@routes.get(
    "/assignments",
    response_model=list[AssignmentView],
    tags=["assignments"],
    summary="List assignments, newest first",
)
async def list_assignments(
    runtime: RuntimeDep,
    lead_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AssignmentView]:
    async with runtime.db.reading() as session:
        rows = await repository.list_assignments(session, lead_id=lead_id, limit=limit)
    return [assignment_view(row) for row in rows]


@routes.get(
    "/assignments/{assignment_id}",
    response_model=AssignmentView,
    tags=["assignments"],
    summary="Read an assignment",
)
async def read_assignment(assignment_id: str, runtime: RuntimeDep) -> AssignmentView:
    async with runtime.db.reading() as session:
        row = await repository.find_assignment(session, assignment_id)
    if row is None:
        raise ProblemError(
            404, "Assignment not found", f"No assignment has the id {assignment_id!r}."
        )
    return assignment_view(row)


@routes.post(
    "/assignments/{assignment_id}/accept",
    response_model=AssignmentView,
    tags=["assignments"],
    summary="Accept an offered lead",
    responses={
        404: {"description": "No such assignment (problem details)"},
        409: {"description": "Already accepted, or escalated to another SDR (problem details)"},
    },
)
async def accept_assignment(
    assignment_id: str, runtime: RuntimeDep, context: ContextDep
) -> AssignmentView:
    """Stops the SLA clock. Too late once the offer was escalated: the answer is then `409`."""
    async with runtime.db.transaction() as session:
        row = await service.accept_assignment(session, context, assignment_id)
    runtime.outbox.wake_relay()
    return assignment_view(row)
