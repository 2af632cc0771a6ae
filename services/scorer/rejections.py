"""Sales feedback: an SDR's rejection or disqualification of a lead, kept for the report.

Functions here take the caller's session and never commit."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.context import ScorerContext

UNKNOWN_SOURCE = "unknown"


async def record_rejection(
    session: AsyncSession,
    context: ScorerContext,
    lead_id: str,
    *,
    assignment_id: str,
    outcome: Literal["rejected", "disqualified"],
    reason_code: str,
) -> None:
    """Keep an SDR's rejection or disqualification for the feedback report."""
    current = await repository.find_score(session, lead_id)
    source = UNKNOWN_SOURCE
    if current is not None and current["erased_at"] is None:
        source = current["profile"].get("source") or UNKNOWN_SOURCE
    await repository.insert_rejection(
        session,
        {
            "lead_id": lead_id,
            "assignment_id": assignment_id,
            "outcome": outcome,
            "reason_code": reason_code,
            "lead_source": source[:100],
            "recorded_at": context.clock.now(),
        },
        await repository.last_mql_rules(session, lead_id),
    )
