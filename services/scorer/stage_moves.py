"""Moving a lead through the lifecycle on request (`move_stage`), and the history row and
`lead.stage_changed` event of one transition (`stage_transition`).

Functions here take the caller's session and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.context import PRODUCER, ScorerContext, count_published
from services.scorer.lifecycle import next_stage
from shared.events import (
    LeadProfile,
    LeadScored,
    LeadScoredData,
    LeadStageChanged,
    LeadStageChangedData,
    ScoreLine,
    Stage,
)


@dataclass(frozen=True)
class StageMove:
    """What a request to change a lead's stage did: `moved` is False when it was there already."""

    lead_id: str
    stage: Stage
    moved: bool


async def move_stage(
    session: AsyncSession,
    context: ScorerContext,
    lead_id: str,
    wanted: Stage,
    *,
    reason: str | None,
    cause: str,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
) -> StageMove | None:
    """Move the lead to `wanted`; publish `lead.stage_changed`, then `lead.scored` with the stage.

    None when the scorer does not know the lead (or it was erased). Raises
    `IllegalTransitionError` when the state machine refuses the move; moving a lead to the
    stage it is in does nothing.
    """
    now = context.clock.now()
    current = await repository.find_score_for_update(session, lead_id)
    if current is None or current["erased_at"] is not None:
        return None
    stage: Stage = current["stage"]
    target = next_stage(stage, wanted)
    if target is None:
        return StageMove(lead_id, stage, moved=False)
    changed = await _record_transition(
        session, lead_id, stage, target, reason=reason, cause=cause, now=now,
        cause_event_id=cause_event_id, correlation_id=correlation_id,
    )
    await repository.update_score(
        session, lead_id,
        {"stage": target, "stage_changed_at": now, "scored_at": now, "updated_at": now},
    )
    published: list[LeadScored | LeadStageChanged] = [
        changed, _rescored_with_stage(current, target, now, correlation_id)
    ]
    count_published(session, context, cause, published)
    await context.outbox.add(session, *published)
    return StageMove(lead_id, target, moved=True)


async def _record_transition(
    session: AsyncSession,
    lead_id: str,
    from_stage: Stage,
    to_stage: Stage,
    *,
    reason: str | None,
    cause: str,
    now: datetime,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
) -> LeadStageChanged:
    entry, event = stage_transition(
        lead_id, from_stage, to_stage, reason=reason, cause=cause, now=now,
        cause_event_id=cause_event_id, correlation_id=correlation_id,
    )
    await repository.insert_stage_changes(session, [entry])
    return event


def stage_transition(
    lead_id: str,
    from_stage: Stage,
    to_stage: Stage,
    *,
    reason: str | None,
    cause: str,
    now: datetime,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
    rule_ids: list[str] | None = None,
) -> tuple[dict[str, Any], LeadStageChanged]:
    """The history row and the event of one transition."""
    entry = {
        "lead_id": lead_id,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "reason": reason,
        "cause": cause,
        "cause_event_id": cause_event_id,
        "rule_ids": rule_ids,
        "changed_at": now,
    }
    event = LeadStageChanged(
        producer=PRODUCER,
        lead_id=lead_id,
        correlation_id=correlation_id,
        occurred_at=now,
        data=LeadStageChangedData(
            from_stage=from_stage, to_stage=to_stage, reason=reason,
            cause_event_id=cause_event_id,
        ),
    )
    return entry, event


def _rescored_with_stage(
    row: RowMapping, stage: Stage, now: datetime, correlation_id: str | None
) -> LeadScored:
    return LeadScored(
        producer=PRODUCER,
        lead_id=row["lead_id"],
        correlation_id=correlation_id,
        occurred_at=now,
        data=LeadScoredData(
            score=row["score"],
            fit=row["fit"],
            engagement=row["engagement"],
            temperature=row["temperature"],
            model_version=row["model_version"],
            breakdown=[ScoreLine.model_validate(line) for line in row["breakdown"]],
            lead=LeadProfile.model_validate(row["profile"]),
            stage=stage,
            buying_signal=row["buying_signal"],
            received_at=row["received_at"],
        ),
    )
