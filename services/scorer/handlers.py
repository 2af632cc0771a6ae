"""What the scorer does with each event it consumes: the whole flow is `handler_table`.

From ingest (`leads` topic): a received or updated lead is rescored with its whole profile; a
signal is kept once and the lead rescored; an erased lead loses its personal data here too.
From the router (`assignments` topic): each event moves the lead to the stage
`shared.lifecycle.STAGE_AFTER_ROUTER_EVENT` names (accepted: SAL, qualified: SQL; rejected,
disqualified and `lead.nurture`: recycled); a rejection and a disqualification are also kept
with their reason code for the feedback report.

An assignment event that asks for a transition the lifecycle refuses (a late event about a
lead that moved on) is logged and counted, not dead-lettered: the event itself is valid.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import erasure, rejections, service, stage_moves
from services.scorer.context import ScorerContext
from services.scorer.lifecycle import STAGE_AFTER_ROUTER_EVENT, IllegalTransitionError
from shared.consumer import Handler
from shared.events import (
    AssignmentAccepted,
    AssignmentDisqualified,
    AssignmentQualified,
    AssignmentRejected,
    Envelope,
    LeadErased,
    LeadNurture,
    LeadReceived,
    LeadUpdated,
    SignalRecorded,
)
from shared.metrics import count_after_commit

logger = logging.getLogger(__name__)


def handler_table(context: ScorerContext) -> dict[str, Handler]:
    """Event type -> handler. Handlers run inside the consumer's transaction; never commit."""

    async def on_profile(session: AsyncSession, event: LeadReceived | LeadUpdated) -> None:
        await service.score_profile(
            session, context, lead_id=event.lead_id, profile=event.data.lead,
            correlation_id=event.correlation_id,
            received_at=event.occurred_at if isinstance(event, LeadReceived) else None,
        )

    async def on_signal(session: AsyncSession, event: SignalRecorded) -> None:
        await service.record_signal(
            session, context, lead_id=event.lead_id, data=event.data,
            correlation_id=event.correlation_id,
        )

    async def on_erased(session: AsyncSession, event: LeadErased) -> None:
        await erasure.erase_lead(session, context, event.lead_id,
                                 correlation_id=event.correlation_id)

    async def on_accepted(session: AsyncSession, event: AssignmentAccepted) -> None:
        await move(session, event, reason=None)

    async def on_qualified(session: AsyncSession, event: AssignmentQualified) -> None:
        await move(session, event, reason="qualified")

    async def on_rejected(session: AsyncSession, event: AssignmentRejected) -> None:
        await rejections.record_rejection(
            session, context, event.lead_id, assignment_id=event.data.assignment_id,
            outcome="rejected", reason_code=event.data.reason_code,
        )
        await move(session, event, reason=event.data.reason_code)

    async def on_disqualified(session: AsyncSession, event: AssignmentDisqualified) -> None:
        await rejections.record_rejection(
            session, context, event.lead_id, assignment_id=event.data.assignment_id,
            outcome="disqualified", reason_code=event.data.reason_code,
        )
        await move(session, event, reason=event.data.reason_code)

    async def on_nurture(session: AsyncSession, event: LeadNurture) -> None:
        await move(session, event, reason=event.data.reason)

    async def move(session: AsyncSession, event: Envelope, *, reason: str | None) -> None:
        cause = str(getattr(event, "type", "event"))
        wanted = STAGE_AFTER_ROUTER_EVENT[cause]
        try:
            moved = await stage_moves.move_stage(
                session, context, event.lead_id, wanted, reason=reason, cause=cause,
                cause_event_id=str(event.event_id), correlation_id=event.correlation_id,
            )
        except IllegalTransitionError as refused:
            count_after_commit(session, context.metrics.stage_changes_refused.labels(cause))
            logger.warning("lead %s: %s ignored: %s", event.lead_id, cause, refused)
            return
        if moved is None:
            logger.warning("lead %s: %s for a lead the scorer does not have", event.lead_id, cause)

    return {
        "lead.received": on_profile,
        "lead.updated": on_profile,
        "signal.recorded": on_signal,
        "lead.erased": on_erased,
        "assignment.accepted": on_accepted,
        "assignment.qualified": on_qualified,
        "assignment.rejected": on_rejected,
        "assignment.disqualified": on_disqualified,
        "lead.nurture": on_nurture,
    }
