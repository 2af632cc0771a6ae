"""ingest's business logic: store a submission, deduplicate by email, publish what changed.

Functions here take the caller's session and never commit: the HTTP endpoint owns the
transaction, so the lead, the raw submission and the outbox event commit together or not at all.
The JSON endpoints run them through `IngestContext.writes` (`shared.group_commit`): the work of
concurrent requests shares one transaction, applied in arrival order, so two submissions of
one email in a group merge as they would one after the other. Both ways build the new
lead, the merge and their events with the same pure builders (`new_lead_row`,
`received_event`, `lead_merge`, `updated_event`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.idempotency import IdempotentRequests
from services.ingest.lead_writes import LeadWrites, lead_writes
from services.ingest.merge import merge_profile
from services.ingest.rate_limits import RateLimiter
from services.ingest.repository import EarlierSubmission
from services.ingest.schemas import LeadAccepted, LeadSubmission
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourceRegistry
from shared.clock import Clock
from shared.db import new_id
from shared.erasure import WalScrubber
from shared.events import (
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    LeadUpdated,
    LeadUpdatedData,
)
from shared.group_commit import GroupCommit
from shared.outbox import Outbox
from shared.sealing import new_data_key

PRODUCER = "ingest"
PROFILE_FIELDS = tuple(LeadProfile.model_fields)


@dataclass(frozen=True)
class Intake:
    """Where a submission came from, kept with its raw copy for audit and replay."""

    channel: str = "api"
    source_key: str | None = None
    external_id: str | None = None
    """The sender's id of this delivery (vendor event id); a second delivery is a replay."""
    raw: str | None = None
    """The request body exactly as received, when it is not the JSON of the lead itself."""
    defaults: Mapping[str, Any] | None = None
    """Values for fields the submission leaves empty (the source's channel, campaign...)."""
    correlation_id: str | None = None
    delivery_id: str | None = None
    """Shared by the entries of one webhook delivery (they share `raw`)."""
    delivery_part: int | None = None
    """This entry's place in the delivery's array of entries."""


@dataclass(frozen=True)
class FormLimits:
    per_ip: RateLimiter
    per_form: RateLimiter

    @classmethod
    def of(cls, settings: IngestSettings) -> FormLimits:
        return cls(
            per_ip=RateLimiter(settings.form_posts_per_ip_per_minute, burst=5),
            per_form=RateLimiter(settings.form_posts_per_form_per_minute, burst=100),
        )


@dataclass(frozen=True)
class IngestContext:
    """What the service functions and endpoints need besides the session."""

    outbox: Outbox
    clock: Clock
    settings: IngestSettings
    sources: SourceRegistry
    form_limits: FormLimits
    idempotency: IdempotentRequests
    writes: GroupCommit
    """Where the write endpoints run their work: in groups, one commit per group."""
    scrubber: WalScrubber | None = None
    """Empties SQLite's write-ahead log after an erasure."""
    crm_fetch_due: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a webhook queued a CRM fetch (`services.ingest.crm_fetches`)."""


def profile_of(row: Mapping[str, Any]) -> LeadProfile:
    return LeadProfile.model_validate({field: row.get(field) for field in PROFILE_FIELDS})


async def submit_lead(
    session: AsyncSession,
    context: IngestContext,
    submission: LeadSubmission,
    intake: Intake | None = None,
) -> LeadAccepted:
    """Store a submission as a new lead or merge it into the lead with the same email."""
    intake = intake or Intake()
    now = context.clock.now()
    incoming = submission.profile(**_defaults(intake))
    if incoming.get("consent") and incoming["consent"].get("given_at") is None:
        incoming["consent"]["given_at"] = now.isoformat()
    writes = lead_writes(session)
    if writes is not None:
        return await _submit_in_group(session, context, writes, submission.email, incoming,
                                      intake)
    existing = await repository.find_lead_by_email_for_update(session, submission.email)
    if existing is None:
        row = new_lead_row(new_id(), incoming, now)
        try:
            async with _savepoint_for_insert(session):
                await repository.insert_lead(session, row)
        except IntegrityError:
            # Another request created this email's lead a moment ago: merge into it instead.
            existing = await repository.find_lead_by_email_for_update(session, submission.email)
            if existing is None:
                raise
        else:
            await _record(session, context, row["id"], incoming, intake)
            await context.outbox.add(session, received_event(row, intake, now))
            return LeadAccepted(lead_id=row["id"], status="created")
    return await _merge_into(session, context, existing, incoming, intake)


def _savepoint_for_insert(session: AsyncSession) -> AbstractAsyncContextManager[object]:
    """Where the insert of a lead found missing in this transaction runs.

    On PostgreSQL `FOR UPDATE` locks no row that does not exist yet: another transaction may
    insert the same email meanwhile, and a savepoint lets the unique conflict roll back only
    the insert. On SQLite nobody can, since the write transaction took the file's only write
    lock before it looked, so the savepoint's two statements are spared."""
    if session.get_bind().dialect.name == "sqlite":
        return nullcontext()
    return session.begin_nested()


async def _submit_in_group(
    session: AsyncSession, context: IngestContext, writes: LeadWrites, email: str,
    incoming: dict[str, Any], intake: Intake,
) -> LeadAccepted:
    """`submit_lead` within a group: decided in memory, written at the group's end."""
    now = context.clock.now()
    current = await writes.lead(session, email)
    if current is None:
        row = new_lead_row(new_id(), incoming, now)
        writes.create(row)
        await _record(session, context, row["id"], incoming, intake)
        writes.publish(received_event(row, intake, now))
        return LeadAccepted(lead_id=row["id"], status="created")
    lead_id = current["id"]
    await _record(session, context, lead_id, incoming, intake)
    merge = lead_merge(current, incoming, intake, now)
    if merge is None:
        return LeadAccepted(lead_id=lead_id, status="unchanged")
    writes.change(current, merge.update)
    writes.publish(merge.event)
    return LeadAccepted(lead_id=lead_id, status="merged")


def new_lead_row(lead_id: str, incoming: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The row of a lead made from its first submission."""
    return {"demo_requested": False, **merge_profile({}, incoming),
            "id": lead_id, "created_at": now, "updated_at": now, "data_key": new_data_key()}


def received_event(row: Mapping[str, Any], intake: Intake, now: datetime) -> LeadReceived:
    """`lead.received` for the new lead `row`."""
    return LeadReceived(
        producer=PRODUCER, lead_id=row["id"], correlation_id=intake.correlation_id,
        occurred_at=now, data=LeadReceivedData(lead=profile_of(row)),
    )


@dataclass(frozen=True)
class LeadMerge:
    """What a submission changes in a lead that exists: the update to write, the event."""

    update: dict[str, Any]
    event: LeadUpdated


def lead_merge(
    current: Mapping[str, Any], incoming: Mapping[str, Any], intake: Intake, now: datetime,
) -> LeadMerge | None:
    """How `incoming` merges into the lead `current`; None when it changes nothing."""
    changes = merge_profile(current, incoming)
    if not changes:
        return None
    return LeadMerge(update={**changes, "updated_at": now},
                     event=updated_event({**current, **changes}, changes, intake, now))


def updated_event(
    merged: Mapping[str, Any], changes: Mapping[str, Any], intake: Intake, now: datetime,
) -> LeadUpdated:
    """`lead.updated` for the lead `merged` (its row with `changes` applied)."""
    return LeadUpdated(
        producer=PRODUCER, lead_id=merged["id"], correlation_id=intake.correlation_id,
        occurred_at=now,
        data=LeadUpdatedData(lead=profile_of(merged), changed_fields=sorted(changes)),
    )


async def lock_leads(session: AsyncSession, emails: Sequence[str]) -> None:
    """Lock the existing leads of `emails` (sorted) before a unit that touches several."""
    if not emails:
        return
    writes = lead_writes(session)
    if writes is not None:
        await writes.load(session, emails)
    else:
        await repository.find_leads_by_email_for_update(session, emails)


async def earlier_submission(
    session: AsyncSession, source_key: str, external_id: str
) -> EarlierSubmission | None:
    """The submission with this sender's id, stored or queued in this session's group."""
    writes = lead_writes(session)
    queued = writes.queued_submission(source_key, external_id) if writes is not None else None
    if queued is not None:
        return queued
    return await repository.find_submission(session, source_key, external_id)


async def submission_known(session: AsyncSession, source_key: str, external_id: str) -> bool:
    """A submission with this sender's id exists, or is queued in this session's group."""
    return await earlier_submission(session, source_key, external_id) is not None


async def record_unmatched(session: AsyncSession, context: IngestContext, intake: Intake) -> None:
    """Keep a submission that names no lead (no usable email), for audit and replay."""
    await _record(session, context, None, {}, intake)


def _defaults(intake: Intake) -> dict[str, Any]:
    defaults = dict(intake.defaults or {})
    attribution = {
        key: defaults.pop(key) for key in ("channel", "campaign") if key in defaults
    }
    if attribution:
        defaults["attribution"] = attribution
    return defaults


async def _record(
    session: AsyncSession, context: IngestContext, lead_id: str | None,
    incoming: Mapping[str, Any], intake: Intake,
) -> None:
    row: dict[str, Any] = {
        "lead_id": lead_id, "channel": intake.channel, "source_key": intake.source_key,
        "external_id": intake.external_id, "payload": incoming, "raw": intake.raw,
        "received_at": context.clock.now(), "delivery_id": intake.delivery_id,
        "delivery_part": intake.delivery_part,
    }
    writes = lead_writes(session)
    if writes is not None:
        writes.record(row)
    else:
        await repository.record_submission(session, **row)


async def _merge_into(
    session: AsyncSession,
    context: IngestContext,
    existing: RowMapping,
    incoming: dict[str, Any],
    intake: Intake,
) -> LeadAccepted:
    now = context.clock.now()
    lead_id: str = existing["id"]
    await _record(session, context, lead_id, incoming, intake)
    merge = lead_merge(dict(existing), incoming, intake, now)
    if merge is None:
        return LeadAccepted(lead_id=lead_id, status="unchanged")
    await repository.update_lead(session, lead_id, merge.update)
    await context.outbox.add(session, merge.event)
    return LeadAccepted(lead_id=lead_id, status="merged")
