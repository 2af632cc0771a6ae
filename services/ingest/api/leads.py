"""The JSON lead API: `POST /v1/leads`, `GET /v1/leads/{id}`."""

from __future__ import annotations

from fastapi import APIRouter, Header, status

from services.ingest import repository, service
from services.ingest.api.dependencies import ContextDep
from services.ingest.schemas import LeadAccepted, LeadSubmission, LeadView
from services.ingest.service import Intake
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["leads"])


@routes.post(
    "/leads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    summary="Submit a lead",
    responses={422: {"description": "Invalid fields (RFC 9457 problem details)"}},
)
async def submit_lead(
    submission: LeadSubmission,
    runtime: RuntimeDep,
    context: ContextDep,
    x_correlation_id: str | None = Header(default=None, max_length=128),
) -> LeadAccepted:
    """Store the lead (or merge it into the lead with the same email) and publish the event.

    `202` means the lead is committed to the database; its event is on its way to the scorer.
    """
    async with runtime.db.transaction() as session:
        accepted = await service.submit_lead(
            session, context, submission, Intake(correlation_id=x_correlation_id)
        )
    runtime.outbox.wake_relay()
    return accepted


@routes.get("/leads/{lead_id}", response_model=LeadView, summary="Read a lead")
async def read_lead(lead_id: str, runtime: RuntimeDep) -> LeadView:
    async with runtime.db.reading() as session:
        row = await repository.find_lead(session, lead_id)
    if row is None:
        raise ProblemError(404, "Lead not found", f"No lead has the id {lead_id!r}.")
    return LeadView.model_validate(dict(row))
