"""`POST /v1/scoring-model/replay` (admin): what a draft scoring model would have said about
the last days' leads, against the model in force, before it is published.

Each lead received in the period (not erased) is scored twice at the moment of its latest
score (`scored_at`), on its profile and the signals it had by then: once by the model in
force, once by the draft. The answer counts MQLs and temperatures under each and lists the
leads whose temperature or MQL verdict would change. Nothing is stored or published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from services.scorer import model_publishing, repository, service
from services.scorer.api import scorer_context
from services.scorer.score_result import ScoreResult
from services.scorer.scoring import score
from services.scorer.scoring_model import ScoringModel
from shared.app import RuntimeDep
from shared.auth import require_admin
from shared.events import LeadProfile

routes = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])

CHANGED_LIMIT = 500


class ModelReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(description="The draft scoring model, as `PUT` takes it")
    days: int = Field(default=30, ge=1, le=90, description="Replay the leads of the last days")


def verdicts(results: Sequence[ScoreResult], version: str) -> dict[str, Any]:
    temperatures = Counter(result.temperature for result in results)
    return {"version": version, "mql": sum(1 for result in results if result.mql),
            "temperature": {name: temperatures[name] for name in ("hot", "warm", "cold")}}


def compare(
    current: Mapping[str, ScoreResult], draft: Mapping[str, ScoreResult],
    current_version: str, draft_version: str,
) -> dict[str, Any]:
    """Counts under each model and the leads whose temperature or MQL verdict changes."""
    changed = [
        {"lead_id": lead_id,
         "current": {"score": current[lead_id].total, "temperature": current[lead_id].temperature,
                     "mql": current[lead_id].mql},
         "draft": {"score": draft[lead_id].total, "temperature": draft[lead_id].temperature,
                   "mql": draft[lead_id].mql}}
        for lead_id in current
        if (current[lead_id].temperature, current[lead_id].mql)
        != (draft[lead_id].temperature, draft[lead_id].mql)
    ]
    return {
        "leads": len(current),
        "current": verdicts(list(current.values()), current_version),
        "draft": verdicts(list(draft.values()), draft_version),
        "became_mql": sum(1 for lead_id in current
                          if draft[lead_id].mql and not current[lead_id].mql),
        "no_longer_mql": sum(1 for lead_id in current
                             if current[lead_id].mql and not draft[lead_id].mql),
        "changed": changed[:CHANGED_LIMIT],
        "changed_count": len(changed),
    }


@routes.post("/scoring-model/replay", tags=["scoring model"],
             summary="Replay a draft model over the last days' leads, against the model in force",
             responses={422: {"description": "The draft model is not valid (problem details)"}})
async def replay_model(body: ModelReplayRequest, request: Request,
                       runtime: RuntimeDep) -> dict[str, Any]:
    draft: ScoringModel = model_publishing.parse_model_document(body.model)
    current: ScoringModel = scorer_context(request).models.current
    until = runtime.clock.now()
    since = until - timedelta(days=body.days)
    async with runtime.db.reading() as session:
        rows = {row["lead_id"]: row for row in await repository.scores_received_between(
            session, since, until + timedelta(microseconds=1))}
        signals = await repository.signals_of_leads(session, sorted(rows))
    now_results: dict[str, ScoreResult] = {}
    draft_results: dict[str, ScoreResult] = {}
    for lead_id, row in sorted(rows.items()):
        at = row["scored_at"]
        profile = LeadProfile.model_validate(row["profile"])
        then = [service.signal_of(signal) for signal in signals[lead_id]
                if signal["signal_at"] <= at]
        now_results[lead_id] = score(profile, then, current, at)
        draft_results[lead_id] = score(profile, then, draft, at)
    return {"since": since, "until": until,
            **compare(now_results, draft_results, current.version, draft.version)}
