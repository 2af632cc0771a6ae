"""Right to erasure: a lead's personal data leaves ingest's tables, and `lead.erased` tells the
other services to do the same.

The lead row and every raw submission of it are deleted; so are its events already published
from the outbox (they carry the profile). Events not yet published go out, then `lead.erased`
after them (same key, same partition), so consumers erase what they just received. The
scorer passes `lead.erased` on to the router, after the lead's last score.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.service import PRODUCER, IngestContext
from shared.events import LeadErased, LeadErasedData


async def erase_lead(session: AsyncSession, context: IngestContext, lead_id: str) -> bool:
    """Erase the lead; False when there is no such lead."""
    if await repository.find_lead(session, lead_id) is None:
        return False
    await repository.erase_lead(session, lead_id, context.outbox.tables.events)
    await context.outbox.add(
        session,
        LeadErased(producer=PRODUCER, lead_id=lead_id, occurred_at=context.clock.now(),
                   data=LeadErasedData()),
    )
    return True


async def erase_by_email(session: AsyncSession, context: IngestContext, email: str) -> str | None:
    """Erase the lead with this (normalised) email; its id, or None when there is none."""
    row = await repository.find_lead_by_email_for_update(session, email)
    if row is None:
        return None
    lead_id: str = row["id"]
    await erase_lead(session, context, lead_id)
    return lead_id
