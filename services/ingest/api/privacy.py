"""Erasure: `DELETE /v1/leads/{id}` and `POST /v1/erasures` (by email); the leads' data keys
for the scorer and the router: `POST /v1/internal/lead-keys` (admin bearer token, for now)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from services.ingest import erasure, repository
from services.ingest.api.dependencies import ADMIN_PROBLEMS, AdminDep, ContextDep
from services.ingest.api.route import IngestRoute
from services.ingest.normalise import normalise_email
from shared.app import RuntimeDep
from shared.lead_keys import KEYS_PER_REQUEST
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["privacy"],
                   dependencies=[AdminDep], responses=ADMIN_PROBLEMS, route_class=IngestRoute)


class ErasureRequest(BaseModel):
    email: Annotated[str, Field(max_length=320), AfterValidator(normalise_email)]


class ErasureResult(BaseModel):
    lead_id: str


class LeadKeysRequest(BaseModel):
    lead_ids: list[Annotated[str, Field(max_length=36)]] = Field(max_length=KEYS_PER_REQUEST)


class LeadKeys(BaseModel):
    keys: dict[str, str]
    """Lead id -> data key (URL-safe base64); a lead without a key (erased) is left out."""


@routes.delete("/leads/{lead_id}", status_code=204, summary="Erase a lead's personal data",
               responses={404: {"description": "No lead has this id"}})
async def erase_lead(lead_id: str, runtime: RuntimeDep, context: ContextDep) -> Response:
    async with runtime.db.transaction() as session:
        erased = await erasure.erase_lead(session, context, lead_id)
    if not erased:
        raise ProblemError(404, "Lead not found", f"No lead has the id {lead_id!r}.")
    return Response(status_code=204)


@routes.post("/erasures", status_code=202, response_model=ErasureResult,
             summary="Erase the lead with this email",
             responses={404: {"description": "No lead has this email"}})
async def erase_by_email(
    request: ErasureRequest, runtime: RuntimeDep, context: ContextDep
) -> ErasureResult:
    async with runtime.db.transaction() as session:
        lead_id = await erasure.erase_by_email(session, context, request.email)
    if lead_id is None:
        raise ProblemError(404, "Lead not found", "No lead has this email.")
    return ErasureResult(lead_id=lead_id)


@routes.post("/internal/lead-keys", response_model=LeadKeys, tags=["internal"],
             summary="Data keys of leads (for the scorer and the router)")
async def lead_keys(request: LeadKeysRequest, runtime: RuntimeDep) -> JSONResponse:
    """The keys that open the leads' sealed events; an erased lead has none."""
    # A response, not the model: the lean handler answers (a request per consumer batch).
    async with runtime.db.reading() as session:
        found = await repository.data_keys(session, request.lead_ids)
    return JSONResponse({"keys": found})
