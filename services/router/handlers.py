"""What router does with each event type it consumes: the whole table is `handler_table`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.router import assignment_actions, service
from services.router.service import RouterContext
from shared.consumer import Handler
from shared.events import LeadErased, LeadScored


def handler_table(context: RouterContext) -> dict[str, Handler]:
    """Event type -> handler. Handlers run inside the consumer's transaction; never commit."""

    async def on_lead_scored(session: AsyncSession, event: LeadScored) -> None:
        await service.route_scored_lead(session, context, event)

    async def on_lead_erased(session: AsyncSession, event: LeadErased) -> None:
        await assignment_actions.erase_lead(session, context, event.lead_id)

    return {"lead.scored": on_lead_scored, "lead.erased": on_lead_erased}
