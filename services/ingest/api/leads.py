"""The JSON lead API: `POST /v1/leads`, `POST /v1/leads/batch`, `GET /v1/leads/{id}`.

Both posts take the admin token or a source's API key (see `dependencies`) and an optional
`Idempotency-Key` (see `idempotency`), scoped by the `X-Source-Key` header (`api` when absent).
Reading a lead (personal data) takes the admin token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import batches, repository, service
from services.ingest.api.dependencies import AdminDep, ContextDep, SubmitterDep
from services.ingest.api.route import IngestRoute
from services.ingest.batches import BatchItemResult
from services.ingest.repository import EarlierSubmission
from services.ingest.schemas import LeadAccepted, LeadPost, LeadView
from services.ingest.service import Intake
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["leads"], route_class=IngestRoute)

MAX_BATCH = 500
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255)]
SourceKeyHeader = Annotated[str | None, Header(max_length=100)]
CorrelationId = Annotated[str | None, Header(max_length=128)]
IDEMPOTENCY_PROBLEMS: dict[int | str, dict[str, Any]] = {
    409: {"description": "A request with this Idempotency-Key is in flight"},
    422: {"description": "Invalid fields, or the Idempotency-Key was used with another body"},
}


class LeadBatch(BaseModel):
    leads: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="Leads as `POST /v1/leads` takes them; each may add `external_id`, the "
                    "sender's id of that submission: a second item with the same id from the "
                    "same source is a `duplicate` and changes nothing",
    )


class BatchResult(BaseModel):
    results: list[BatchItemResult]


@routes.post("/leads", status_code=202, response_model=LeadAccepted, summary="Submit a lead",
             dependencies=[SubmitterDep],
             responses={**IDEMPOTENCY_PROBLEMS, 409: {
                 "description": "A request with this Idempotency-Key is in flight, or this "
                                "source's `external_id` went to a submission of no lead"}})
async def submit_lead(
    submission: LeadPost, request: Request, context: ContextDep,
    idempotency_key: IdempotencyKey = None, x_source_key: SourceKeyHeader = None,
    x_correlation_id: CorrelationId = None,
) -> JSONResponse:
    """Store the lead (or merge it into the lead with the same email) and publish the event.

    `202` means the lead is committed to the database; its event is on its way to the scorer.
    A submission whose `external_id` this source sent before is a `duplicate` of that one: the
    answer names its lead, and nothing is stored or published.
    """
    intake = Intake(source_key=x_source_key, correlation_id=x_correlation_id)
    scope, external_id = x_source_key or batches.DEFAULT_SCOPE, submission.external_id
    if external_id is not None:
        intake = replace(intake, source_key=scope, external_id=external_id)

    async def work(session: AsyncSession) -> tuple[int, Any]:
        if external_id is not None:
            earlier = await service.earlier_submission(session, scope, external_id)
            if earlier is not None:
                return 202, _duplicate_of(earlier, external_id).model_dump()
        accepted = await service.submit_lead(session, context, submission, intake)
        return 202, accepted.model_dump()

    body = await request.body()
    status_code, answer = await _once_more_on_conflict(lambda: context.idempotency.run(
        f"leads:{scope}", idempotency_key, body, work, hint=submission.email,
    ))
    return JSONResponse(answer, status_code=status_code)


def _duplicate_of(earlier: EarlierSubmission, external_id: str) -> LeadAccepted:
    if earlier.lead_id is None:
        raise ProblemError(409, "External id already used", (
            f"This source already sent a submission with external_id {external_id!r}, and "
            "it named no lead."))
    return LeadAccepted(lead_id=earlier.lead_id, status="duplicate")


async def _once_more_on_conflict(
    run: Callable[[], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any]:
    """`run`, and once more if it met a unique conflict: another request with an item of the
    same `external_id` committed first, and the second run sees it as a duplicate."""
    try:
        return await run()
    except IntegrityError:
        return await run()


@routes.post("/leads/batch", status_code=202, response_model=BatchResult,
             summary=f"Submit up to {MAX_BATCH} leads in one transaction",
             dependencies=[SubmitterDep],
             responses=IDEMPOTENCY_PROBLEMS)
async def submit_leads(
    batch: LeadBatch, request: Request, context: ContextDep,
    idempotency_key: IdempotencyKey = None, x_source_key: SourceKeyHeader = None,
    x_correlation_id: CorrelationId = None,
) -> JSONResponse:
    """Each lead is validated on its own: invalid ones are listed with their errors, the
    others stored (all in one transaction). Results are in the order of the leads; an item
    whose `external_id` this source already sent is a `duplicate`."""
    intake = Intake(channel="batch", source_key=x_source_key, correlation_id=x_correlation_id)

    checked = batches.validate_items(batch.leads)

    async def work(session: AsyncSession) -> tuple[int, Any]:
        results = await batches.submit_batch(session, context, batch.leads, intake, checked)
        return 202, BatchResult(results=results).model_dump(exclude_none=True)

    body = await request.body()
    status_code, answer = await _once_more_on_conflict(lambda: context.idempotency.run(
        f"leads:{x_source_key or 'api'}", idempotency_key, body, work,
        hint=batches.emails_of(checked),
    ))
    return JSONResponse(answer, status_code=status_code)


@routes.get("/leads/{lead_id}", response_model=LeadView, summary="Read a lead",
            dependencies=[AdminDep],
            responses={404: {"description": "No lead has this id"}})
async def read_lead(lead_id: str, runtime: RuntimeDep) -> LeadView:
    async with runtime.db.reading() as session:
        row = await repository.find_lead(session, lead_id)
    if row is None:
        raise ProblemError(404, "Lead not found", f"No lead has the id {lead_id!r}.")
    return LeadView.model_validate(dict(row))
