"""Right to erasure: a lead's personal data leaves ingest's tables, and `lead.erased` tells the
other services to do the same.

The lead row (with its data key: every event of the lead in the log becomes unreadable,
`shared.sealing`) and every raw submission of it are deleted; so are its events already
published from the outbox and its dead letters. A webhook delivery that carried other people
too keeps their submissions, and their copy of the raw body loses the erased person's part
(`redact_parts`). Events not yet published go out, sealed, then `lead.erased` after them
(same key, same partition), so consumers erase what they just received. The scorer passes
`lead.erased` on to the router, after the lead's last score. Once committed, SQLite's
write-ahead log is emptied into the zeroed database file (`shared.erasure`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.models import INBOX, OUTBOX
from services.ingest.service import PRODUCER, IngestContext
from shared.erasure import erase_delivery_records
from shared.events import LeadErased, LeadErasedData

ERASED_PART: dict[str, Any] = {"erased": True}
"""What stands in a shared raw body for the part of an erased person."""


async def erase_lead(session: AsyncSession, context: IngestContext, lead_id: str) -> bool:
    """Erase the lead; False when there is no such lead."""
    if await repository.find_lead(session, lead_id) is None:
        return False
    for delivery_id, parts in (await repository.deliveries_of_lead(session, lead_id)).items():
        raw = await repository.raw_of_delivery(session, delivery_id, lead_id)
        if raw is not None:
            await repository.replace_raw_of_delivery(
                session, delivery_id, lead_id, redact_parts(raw, parts))
    await repository.erase_lead(session, lead_id)
    await erase_delivery_records(session, lead_id, outbox=OUTBOX, inbox=INBOX)
    await context.outbox.add(
        session,
        LeadErased(producer=PRODUCER, lead_id=lead_id, occurred_at=context.clock.now(),
                   data=LeadErasedData()),
    )
    if context.scrubber is not None:
        context.scrubber.after_commit(session)
    return True


def redact_parts(raw: str, parts: Collection[int]) -> str | None:
    """`raw` (a delivery's body: a JSON array of entries) with the entries at `parts` replaced
    by `ERASED_PART`; None when the body is not such an array (the person's part cannot be
    told apart, so none of the body is kept)."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, list) or not all(0 <= part < len(document) for part in parts):
        return None
    for part in parts:
        document[part] = ERASED_PART
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


async def erase_by_email(session: AsyncSession, context: IngestContext, email: str) -> str | None:
    """Erase the lead with this (normalised) email; its id, or None when there is none."""
    row = await repository.find_lead_by_email_for_update(session, email)
    if row is None:
        return None
    lead_id: str = row["id"]
    await erase_lead(session, context, lead_id)
    return lead_id
