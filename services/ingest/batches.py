"""Batches of leads (`POST /v1/leads/batch`): each item validated on its own, all stored in the
caller's transaction, one result per item in the order of the items.

An item may carry `external_id`: the sender's id of that submission (a CRM record id, or a
hash of an imported row), unique per source (the `X-Source-Key` header, `api` when absent). An
item whose id the source already sent is a `duplicate` and changes nothing: no submission, no
event. That is what makes resending a batch, or re-running a whole import, safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import service
from services.ingest.fields import submission_errors
from services.ingest.schemas import LeadSubmission
from services.ingest.service import IngestContext, Intake

DEFAULT_SCOPE = "api"
MAX_EXTERNAL_ID = 255


class BatchItemResult(BaseModel):
    index: int
    status: Literal["created", "merged", "unchanged", "duplicate", "invalid"]
    lead_id: str | None = None
    errors: list[dict[str, str]] | None = None


def validate_items(
    items: Sequence[Mapping[str, Any]],
) -> list[LeadSubmission | BatchItemResult]:
    """Each item as a submission, or the `invalid` result it gets."""
    checked: list[LeadSubmission | BatchItemResult] = []
    for index, item in enumerate(items):
        external_id = item.get("external_id")
        if external_id is not None and not _valid_external_id(external_id):
            checked.append(BatchItemResult(index=index, status="invalid", errors=[{
                "field": "external_id", "in": "body",
                "message": f"a text of 1 to {MAX_EXTERNAL_ID} characters",
            }]))
            continue
        try:
            checked.append(LeadSubmission.model_validate(item))
        except ValidationError as error:
            checked.append(BatchItemResult(index=index, status="invalid",
                                           errors=submission_errors(error)))
    return checked


def emails_of(checked: Sequence[LeadSubmission | BatchItemResult]) -> list[str]:
    """The batch's normalised emails, sorted: the order its leads are locked in."""
    return sorted({item.email for item in checked if isinstance(item, LeadSubmission)})


async def submit_batch(
    session: AsyncSession, context: IngestContext, items: Sequence[Mapping[str, Any]],
    intake: Intake, checked: Sequence[LeadSubmission | BatchItemResult] | None = None,
) -> list[BatchItemResult]:
    """Store a batch; `checked` is `validate_items(items)` when the caller has it already.

    The batch's existing leads are locked first, in email order: two instances storing
    batches that share emails then wait on each other instead of deadlocking."""
    checked = validate_items(items) if checked is None else checked
    await service.lock_leads(session, emails_of(checked))
    results = []
    scope = intake.source_key or DEFAULT_SCOPE
    seen: set[str] = set()
    for index, (item, submission) in enumerate(zip(items, checked, strict=True)):
        if isinstance(submission, BatchItemResult):
            results.append(submission)
            continue
        external_id = item.get("external_id")
        if external_id and (external_id in seen or await service.submission_known(
            session, scope, external_id
        )):
            results.append(BatchItemResult(index=index, status="duplicate"))
            continue
        item_intake = intake
        if external_id:
            seen.add(external_id)
            item_intake = replace(intake, source_key=scope, external_id=external_id)
        accepted = await service.submit_lead(session, context, submission, item_intake)
        results.append(BatchItemResult(index=index, status=accepted.status,
                                       lead_id=accepted.lead_id))
    return results


def _valid_external_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_EXTERNAL_ID
