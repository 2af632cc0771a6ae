"""Erasing a lead: its personal data and signals go, a tombstone stays, `lead.erased` follows.

Functions here take the caller's session and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.context import PRODUCER, ScorerContext
from services.scorer.models import INBOX
from shared.erasure import erase_delivery_records
from shared.events import LeadErased, LeadErasedData


async def erase_lead(
    session: AsyncSession, context: ScorerContext, lead_id: str, *,
    correlation_id: str | None = None,
) -> None:
    """Forget the lead's personal data and signals; keep a tombstone so later events are ignored.

    The stage history and the feedback records stay: they hold ids, stages, rule ids and
    reason codes, no personal data. Its published outbox rows and dead letters go, and its
    data key leaves the memory. `lead.erased` goes on to the scores topic, after every
    `lead.scored` of the lead: the router, which reads only that topic, erases its copy
    knowing no earlier score of the lead is still on its way.
    """
    now = context.clock.now()
    await repository.delete_signals(session, lead_id)
    await erase_delivery_records(session, lead_id, outbox=context.outbox.tables, inbox=INBOX)
    if context.keyring is not None:
        context.keyring.forget(lead_id)
    if context.scrubber is not None:
        context.scrubber.after_commit(session)
    tombstone: dict[str, Any] = {
        "profile": {},
        "breakdown": [],
        "score": 0.0,
        "fit": 0.0,
        "engagement": 0.0,
        "buying_signal": False,
        "active_at": None,
        "next_check_at": None,
        "signal_tally": None,
        "erased_at": now,
        "updated_at": now,
    }
    current = await repository.find_score_for_update(session, lead_id)
    if current is None:
        await repository.insert_score(
            session,
            {**tombstone, "lead_id": lead_id, "temperature": "cold", "model_version": "",
             "scored_at": now},
        )
    else:
        await repository.update_score(session, lead_id, tombstone)
    await context.outbox.add(session, LeadErased(
        producer=PRODUCER, lead_id=lead_id, correlation_id=correlation_id, occurred_at=now,
        data=LeadErasedData(),
    ))
