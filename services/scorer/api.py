"""scorer's HTTP endpoints. Thin: read the stored score, answer."""

from __future__ import annotations

from fastapi import APIRouter

from services.scorer import repository
from services.scorer.schemas import LeadScoreView
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["scores"])


@routes.get(
    "/leads/{lead_id}/score",
    response_model=LeadScoreView,
    summary="Read a lead's score",
    responses={404: {"description": "No score for this lead (RFC 9457 problem details)"}},
)
async def read_score(lead_id: str, runtime: RuntimeDep) -> LeadScoreView:
    """The lead's latest score and why. `404` until the scorer has received the lead."""
    async with runtime.db.reading() as session:
        row = await repository.find_score(session, lead_id)
    if row is None:
        raise ProblemError(
            404, "Score not found", f"The scorer has no lead with the id {lead_id!r} (yet)."
        )
    return LeadScoreView.model_validate(dict(row))
