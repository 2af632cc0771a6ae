"""Receiving a verified webhook delivery: replay detection, mapping, one lead per entry.

Runs in the caller's transaction and never commits. An entry whose sender id was already
received is a replay and changes nothing. An entry without a usable email (HubSpot's thin
events, a form left half empty) is kept as a lead-less submission for audit, never dropped,
and the vendor still gets its `2xx` so it does not retry forever. A thin HubSpot event of a
source with a CRM token is `queued`: its contact is fetched from HubSpot and becomes a lead
then (`services.ingest.crm_fetches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import crm_fetches, service
from services.ingest.fields import canonical_fields, lenient_submission
from services.ingest.service import IngestContext, Intake
from services.ingest.sources import Source
from services.ingest.vendors import Entry
from services.ingest.vendors.registry import field_mapping_of
from shared.db import new_id


class EntryResult(BaseModel):
    external_id: str | None
    status: Literal["created", "merged", "unchanged", "duplicate", "unmatched", "queued"]
    lead_id: str | None = None


class DeliveryResult(BaseModel):
    results: list[EntryResult]

    @property
    def all_duplicates(self) -> bool:
        return all(result.status == "duplicate" for result in self.results)


async def receive(
    session: AsyncSession,
    context: IngestContext,
    source: Source,
    entries: Sequence[Entry],
    *,
    channel: str,
    raw: str,
    correlation_id: str | None = None,
) -> DeliveryResult:
    results = []
    delivery_id = new_id()
    for part, entry in enumerate(entries):
        intake = Intake(
            channel=channel, source_key=source.key, external_id=entry.external_id, raw=raw,
            defaults=source.tag_defaults(), correlation_id=correlation_id,
            delivery_id=delivery_id, delivery_part=part,
        )
        results.append(await _receive_entry(session, context, source, entry, intake))
    return DeliveryResult(results=results)


async def _receive_entry(
    session: AsyncSession, context: IngestContext, source: Source, entry: Entry, intake: Intake
) -> EntryResult:
    if entry.external_id and await service.submission_known(
        session, source.key, entry.external_id
    ):
        return EntryResult(external_id=entry.external_id, status="duplicate")
    mapping = field_mapping_of(source.kind, source.field_mapping)
    try:
        submission = lenient_submission(canonical_fields(entry.fields, mapping))
    except ValidationError:
        await service.record_unmatched(session, context, intake)
        if entry.contact_id is not None and source.crm_token:
            await crm_fetches.enqueue(session, context, source.key, entry.contact_id)
            return EntryResult(external_id=entry.external_id, status="queued")
        return EntryResult(external_id=entry.external_id, status="unmatched")
    accepted = await service.submit_lead(session, context, submission, intake)
    return EntryResult(
        external_id=entry.external_id, status=accepted.status, lead_id=accepted.lead_id
    )
