"""scorer's HTTP endpoints. Thin: parse, call the service (in one transaction), answer.

Every route takes the admin token (`Authorization: Bearer`, `LEADRELAY_ADMIN_TOKEN`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.engine import RowMapping

from services.scorer import model_publishing, repository, stage_moves
from services.scorer.context import ScorerContext
from services.scorer.lifecycle import IllegalTransitionError
from services.scorer.schemas import (
    LeadScoreView,
    PreviewRequest,
    PreviewView,
    RejectionReport,
    RejectionsByRule,
    RejectionsBySource,
    ScoringModelView,
    StageChangeRequest,
    StageChangeResult,
    StageChangeView,
)
from services.scorer.score_result import Signal
from services.scorer.scoring import next_change_at, score
from shared.app import RuntimeDep
from shared.auth import require_admin
from shared.problems import ProblemError
from shared.request_types import DateTimeText

routes = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "The scorer has no such lead (problem details)"}
}
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def scorer_context(request: Request) -> ScorerContext:
    context: ScorerContext = request.app.state.scorer_context
    return context


def lead_not_found(lead_id: str) -> ProblemError:
    return ProblemError(
        404, "Lead not found", f"The scorer has no lead with the id {lead_id!r} (yet)."
    )


def known_lead(row: RowMapping | None, lead_id: str) -> RowMapping:
    if row is None:
        raise lead_not_found(lead_id)
    if row["erased_at"] is not None:
        raise ProblemError(410, "Lead erased", f"The lead {lead_id!r} was erased on request.")
    return row


@routes.get(
    "/leads/{lead_id}/score",
    response_model=LeadScoreView,
    tags=["scores"],
    summary="Read a lead's score, stage and why",
    responses={**NOT_FOUND, 410: {"description": "The lead was erased (problem details)"}},
)
async def read_score(lead_id: str, runtime: RuntimeDep) -> LeadScoreView:
    """The lead's latest score and why. `404` until the scorer has received the lead."""
    async with runtime.db.reading() as session:
        row = known_lead(await repository.find_score(session, lead_id), lead_id)
    return LeadScoreView.model_validate(dict(row))


@routes.get(
    "/leads/{lead_id}/stage-history",
    response_model=list[StageChangeView],
    tags=["lifecycle"],
    summary="A lead's lifecycle transitions, oldest first",
    responses=NOT_FOUND,
)
async def read_stage_history(lead_id: str, runtime: RuntimeDep) -> list[StageChangeView]:
    async with runtime.db.reading() as session:
        if await repository.find_score(session, lead_id) is None:
            raise lead_not_found(lead_id)
        rows = await repository.stage_history(session, lead_id)
    return [StageChangeView.model_validate(dict(row)) for row in rows]


@routes.post(
    "/leads/{lead_id}/stage",
    response_model=StageChangeResult,
    tags=["lifecycle"],
    summary="Report a lead's progress from the CRM (opportunity, customer, or its end)",
    responses={**NOT_FOUND, 409: {"description": "The lifecycle refuses it (problem details)"}},
)
async def change_stage(
    lead_id: str, body: StageChangeRequest, request: Request, runtime: RuntimeDep
) -> StageChangeResult:
    """Moves the lead and publishes `lead.stage_changed`; repeating a move changes nothing."""
    context = scorer_context(request)
    try:
        async with runtime.db.transaction() as session:
            moved = await stage_moves.move_stage(
                session, context, lead_id, body.stage, reason=body.reason, cause="crm"
            )
    except IllegalTransitionError as refused:
        raise ProblemError(
            409, "Illegal stage transition", str(refused), slug="illegal-stage-transition",
            from_stage=refused.from_stage, to_stage=refused.to_stage,
        ) from None
    if moved is None:
        raise lead_not_found(lead_id)
    return StageChangeResult(lead_id=lead_id, stage=moved.stage, moved=moved.moved)


@routes.get(
    "/scoring-model", response_model=ScoringModelView, tags=["scoring model"],
    summary="Read the scoring model in force",
)
async def read_scoring_model(runtime: RuntimeDep, request: Request) -> ScoringModelView:
    async with runtime.db.reading() as session:
        row = await repository.current_model(session)
    if row is None:
        model = scorer_context(request).models.current
        raise ProblemError(
            503, "Scoring model not installed yet",
            f"The scorer is starting; it will publish version {model.version!r}.",
            slug="unavailable", headers={"Retry-After": "1"},
        )
    return ScoringModelView.model_validate(dict(row))


MODEL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A scoring model document, as JSON or as YAML",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@routes.put(
    "/scoring-model",
    response_model=ScoringModelView,
    tags=["scoring model"],
    summary="Publish a new version of the scoring model",
    responses={
        409: {"description": "This version was published before (problem details)"},
        422: {"description": "The document is not a valid model; every error is listed"},
    },
    openapi_extra=MODEL_BODY,
)
async def publish_scoring_model(request: Request, runtime: RuntimeDep) -> ScoringModelView:
    """Every later score uses it, and the sweep rescores every lead against it."""
    context = scorer_context(request)
    model = model_publishing.parse_model_document(await _document(request))
    async with runtime.db.transaction() as session:
        await model_publishing.publish_model(session, context, model)
        row = await repository.current_model(session)
    context.models.current = model
    assert row is not None
    return ScoringModelView.model_validate(dict(row))


@routes.post(
    "/scoring-model/preview",
    response_model=PreviewView,
    tags=["scoring model"],
    summary="Score a sample lead against a draft model, without publishing anything",
    responses={422: {"description": "The draft model is not valid; every error is listed"}},
)
async def preview(body: PreviewRequest, request: Request, runtime: RuntimeDep) -> PreviewView:
    context = scorer_context(request)
    model = (
        model_publishing.parse_model_document(body.model) if body.model is not None
        else context.models.current
    )
    at = body.at or runtime.clock.now()
    signals = [Signal(s.signal_id, s.signal_type, s.signal_at, s.url) for s in body.signals]
    result = score(body.lead, signals, model, at)
    return PreviewView(
        score=result.total, fit=result.fit, engagement=result.engagement,
        temperature=result.temperature, mql=result.mql, buying_signal=result.buying_signal,
        model_version=result.model_version, at=at,
        next_change_at=next_change_at(body.lead, signals, model, at),
        breakdown=list(result.breakdown),
    )


@routes.get(
    "/reports/rejections",
    response_model=RejectionReport,
    tags=["reports"],
    summary="Why sales rejected or disqualified leads, by source and by MQL rule",
)
async def rejection_report(
    runtime: RuntimeDep,
    since: Annotated[
        DateTimeText | None, Query(description="Only rejections from then on; all if unset")
    ] = None,
) -> RejectionReport:
    async with runtime.db.reading() as session:
        by_source = await repository.rejections_by_source(session, since)
        by_rule = await repository.rejections_by_rule(session, since)
    return RejectionReport(
        since=since,
        by_source=[
            RejectionsBySource(source=row["lead_source"], outcome=row["outcome"],
                               reason_code=row["reason_code"], count=row["count"])
            for row in by_source
        ],
        by_rule=[RejectionsByRule.model_validate(dict(row)) for row in by_rule],
    )


async def _document(request: Request) -> Any:
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if any(kind in content_type for kind in YAML_TYPES):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (yaml.YAMLError, ValueError) as error:
        raise ProblemError(
            422, "Invalid scoring model", f"The body is not a readable document: {error}",
            slug="invalid-scoring-model",
        ) from None
