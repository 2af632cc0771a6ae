"""What the scorer does with each event it consumes: the handler table.

Both `lead.received` and `lead.updated` carry the lead's whole profile, so both simply score it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import service
from services.scorer.scoring_model import ScoringModel
from shared.clock import Clock
from shared.consumer import Handler
from shared.events import LeadReceived, LeadUpdated
from shared.outbox import Outbox


@dataclass(frozen=True)
class ScorerContext:
    """What the handlers need beside the consumer's session."""

    outbox: Outbox
    clock: Clock
    model: ScoringModel


def handler_table(context: ScorerContext) -> dict[str, Handler]:
    """Map each consumed event type to its handler."""

    async def score_profile(session: AsyncSession, event: LeadReceived | LeadUpdated) -> None:
        await service.score_lead(
            session,
            context.outbox,
            context.clock,
            context.model,
            lead_id=event.lead_id,
            profile=event.data.lead,
            correlation_id=event.correlation_id,
        )

    return {
        "lead.received": score_profile,
        "lead.updated": score_profile,
    }
