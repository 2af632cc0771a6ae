"""scorer's business logic: score the latest profile of a lead, publish the score when it changes.

Functions here take the caller's session and never commit: the consumer loop owns the
transaction, so the stored score, the outbox event and the processed-event record commit
together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.scoring import ScoreResult, score
from services.scorer.scoring_model import ScoringModel
from shared.clock import Clock
from shared.events import LeadProfile, LeadScored, LeadScoredData
from shared.outbox import Outbox

PRODUCER = "scorer"

ScoreOutcome = Literal["scored", "rescored", "unchanged"]


async def score_lead(
    session: AsyncSession,
    outbox: Outbox,
    clock: Clock,
    model: ScoringModel,
    *,
    lead_id: str,
    profile: LeadProfile,
    correlation_id: str | None = None,
) -> ScoreOutcome:
    """Store the lead's latest profile and score; publish `lead.scored` if the score changed.

    The first score of a lead is always published. Later ones are published only when the
    total, the temperature or the breakdown differs from the stored one.
    """
    now = clock.now()
    result = score(profile, model)
    values: dict[str, Any] = {
        "profile": profile.model_dump(mode="json"),
        "score": result.total,
        "fit": result.fit,
        "engagement": result.engagement,
        "temperature": result.temperature,
        "model_version": result.model_version,
        "breakdown": [line.model_dump(mode="json") for line in result.breakdown],
        "updated_at": now,
    }
    current = await repository.find_score_for_update(session, lead_id)
    if current is None:
        await repository.insert_score(session, {**values, "lead_id": lead_id, "scored_at": now})
        outcome: ScoreOutcome = "scored"
    elif _same_score(current, values):
        await repository.update_score(session, lead_id, values)
        return "unchanged"
    else:
        await repository.update_score(session, lead_id, {**values, "scored_at": now})
        outcome = "rescored"
    await outbox.add(session, _scored_event(lead_id, profile, result, correlation_id, now))
    return outcome


def _same_score(stored: RowMapping, fresh: Mapping[str, Any]) -> bool:
    return all(stored[name] == fresh[name] for name in ("score", "temperature", "breakdown"))


def _scored_event(
    lead_id: str,
    profile: LeadProfile,
    result: ScoreResult,
    correlation_id: str | None,
    occurred_at: datetime,
) -> LeadScored:
    return LeadScored(
        producer=PRODUCER,
        lead_id=lead_id,
        correlation_id=correlation_id,
        occurred_at=occurred_at,
        data=LeadScoredData(
            score=result.total,
            fit=result.fit,
            engagement=result.engagement,
            temperature=result.temperature,
            model_version=result.model_version,
            breakdown=list(result.breakdown),
            lead=profile,
        ),
    )
