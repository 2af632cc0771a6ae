"""ingest's business logic: store a submission, deduplicate by email, publish what changed.

Functions here take the caller's session and never commit: the HTTP endpoint owns the
transaction, so the lead, the raw submission and the outbox event commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.normalise import account_key_for
from services.ingest.schemas import LeadAccepted, LeadSubmission
from shared.clock import Clock
from shared.db import new_id
from shared.events import (
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    LeadUpdated,
    LeadUpdatedData,
)
from shared.outbox import Outbox

PRODUCER = "ingest"
PROFILE_FIELDS = tuple(LeadProfile.model_fields)


def merge_profile(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `incoming` changes: the newest non-empty value wins, blanks never erase.

    A demo request, once made, stays made.
    """
    changes: dict[str, Any] = {}
    for field, value in incoming.items():
        if value is None or value == "" or (field == "demo_requested" and value is False):
            continue
        if current.get(field) != value:
            changes[field] = value
    return changes


def profile_of(row: Mapping[str, Any]) -> LeadProfile:
    return LeadProfile.model_validate({field: row.get(field) for field in PROFILE_FIELDS})


async def submit_lead(
    session: AsyncSession,
    outbox: Outbox,
    clock: Clock,
    submission: LeadSubmission,
    *,
    channel: str = "api",
    correlation_id: str | None = None,
) -> LeadAccepted:
    """Store a submission as a new lead or merge it into the lead with the same email."""
    now = clock.now()
    incoming = submission.model_dump()
    incoming["account_key"] = account_key_for(submission.email)
    existing = await repository.find_lead_by_email_for_update(session, submission.email)
    if existing is None:
        lead_id = new_id()
        try:
            async with session.begin_nested():
                await repository.insert_lead(
                    session, {**incoming, "id": lead_id, "created_at": now, "updated_at": now}
                )
        except IntegrityError:
            # Another request created this email's lead a moment ago: merge into it instead.
            existing = await repository.find_lead_by_email_for_update(session, submission.email)
            if existing is None:
                raise
        else:
            await repository.record_submission(
                session, lead_id=lead_id, channel=channel, payload=incoming, received_at=now
            )
            await outbox.add(
                session,
                LeadReceived(
                    producer=PRODUCER,
                    lead_id=lead_id,
                    correlation_id=correlation_id,
                    occurred_at=now,
                    data=LeadReceivedData(lead=LeadProfile.model_validate(incoming)),
                ),
            )
            return LeadAccepted(lead_id=lead_id, status="created")
    return await _merge_into(session, outbox, existing, incoming, channel, correlation_id, clock)


async def _merge_into(
    session: AsyncSession,
    outbox: Outbox,
    existing: RowMapping,
    incoming: dict[str, Any],
    channel: str,
    correlation_id: str | None,
    clock: Clock,
) -> LeadAccepted:
    now = clock.now()
    lead_id: str = existing["id"]
    await repository.record_submission(
        session, lead_id=lead_id, channel=channel, payload=incoming, received_at=now
    )
    changes = merge_profile(dict(existing), incoming)
    if not changes:
        return LeadAccepted(lead_id=lead_id, status="unchanged")
    await repository.update_lead(session, lead_id, {**changes, "updated_at": now})
    await outbox.add(
        session,
        LeadUpdated(
            producer=PRODUCER,
            lead_id=lead_id,
            correlation_id=correlation_id,
            occurred_at=now,
            data=LeadUpdatedData(
                lead=profile_of({**existing, **changes}), changed_fields=sorted(changes)
            ),
        ),
    )
    return LeadAccepted(lead_id=lead_id, status="merged")
