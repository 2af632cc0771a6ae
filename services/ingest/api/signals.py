"""Behavioural signals: `POST /v1/signals` (one) and `POST /v1/signals/batch` (up to 500).

Both take the admin token or a source's API key, as the lead posts do (see `dependencies`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.api.dependencies import ContextDep, SubmitterDep
from services.ingest.api.route import IngestRoute
from services.ingest.signal_batches import record_signal, record_signals
from services.ingest.signals import SignalInput, SignalResult

routes = APIRouter(prefix="/v1", tags=["signals"], route_class=IngestRoute,
                   dependencies=[SubmitterDep])

MAX_BATCH = 500


class SignalBatch(BaseModel):
    signals: list[SignalInput] = Field(min_length=1, max_length=MAX_BATCH)


class SignalBatchResult(BaseModel):
    results: list[SignalResult]


@routes.post("/signals", status_code=202, response_model=SignalResult,
             summary="Record a behavioural signal of a lead",
             responses={404: {"description": "No lead has this id"},
                        422: {"description": "Invalid fields"}})
async def post_signal(
    signal: SignalInput, context: ContextDep,
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:
    """Published as `signal.recorded`; the same signal sent again is a `duplicate`."""

    async def work(session: AsyncSession) -> SignalResult:
        return await record_signal(session, context, signal, x_correlation_id)

    result = await context.writes.run(work, signal.email)
    return JSONResponse(result.model_dump(mode="json"), status_code=202)


@routes.post("/signals/batch", status_code=202, response_model=SignalBatchResult,
             summary=f"Record up to {MAX_BATCH} signals in one transaction",
             responses={404: {"description": "A signal names an unknown lead id"},
                        422: {"description": "Invalid fields"}})
async def post_signals(
    batch: SignalBatch, context: ContextDep,
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:

    emails = sorted({signal.email for signal in batch.signals if signal.email})

    async def work(session: AsyncSession) -> SignalBatchResult:
        return SignalBatchResult(
            results=await record_signals(session, context, batch.signals, x_correlation_id))

    result = await context.writes.run(work, emails)
    return JSONResponse(result.model_dump(mode="json"), status_code=202)
