"""Behavioural signals of leads: recorded and published as `signal.recorded`, once each.

A signal names its lead by id or by email; an email nobody has sent before creates the lead
(a lead is anyone who showed interest). Each signal has a stable id, the sender's when given,
else derived from what it says, so that a sender retrying a signal does not count it twice:
the event id is derived from the signal id and the outbox refuses it a second time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import lead_writes, repository, service
from services.ingest.normalise import normalise_email
from services.ingest.schemas import LeadSubmission
from services.ingest.service import IngestContext, Intake
from shared.events import SignalRecorded, SignalRecordedData
from shared.problems import ProblemError
from shared.request_types import DateTimeText

KNOWN_TYPES = (
    "email_open", "email_click", "page_view", "content_download", "webinar_registered",
    "webinar_attended", "demo_request", "quote_request", "pricing_page_view", "trial_signup",
    "product_usage", "unsubscribe", "email_bounce",
)
SIGNAL_NAMESPACE = uuid.UUID("6f0c1f5e-3c55-4d53-9a57-2f4e1b8f9a10")
SignalType = Annotated[
    str, Field(pattern=rf"^(?:{'|'.join(KNOWN_TYPES)}|custom:[a-z0-9_.-]{{1,60}})$")
]
PropertyValue = str | int | float | bool | None


class SignalInput(BaseModel):
    """One behaviour of one lead. Give `lead_id` or `email`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"email": "ada@example.com", "type": "pricing_page_view",
         "url": "https://example.com/pricing", "occurred_at": "2026-01-05T09:00:00Z"}
    ]})

    signal_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    type: SignalType
    lead_id: Annotated[str, Field(max_length=36)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    occurred_at: DateTimeText | None = None
    url: Annotated[str, Field(max_length=2000)] | None = None
    source: Annotated[str, Field(max_length=100)] | None = None
    properties: dict[Annotated[str, Field(max_length=100)], PropertyValue] = Field(
        default_factory=dict, max_length=50
    )

    @model_validator(mode="after")
    def _names_a_lead(self) -> SignalInput:
        if not self.lead_id and not self.email:
            raise ValueError("give the lead's `lead_id` or its `email`")
        if self.email:
            self.email = normalise_email(self.email)
        return self

    def stable_id(self, lead_key: str, at: datetime) -> str:
        if self.signal_id:
            return self.signal_id
        content = f"{lead_key}|{self.type}|{at.isoformat()}|{self.url}"
        return str(uuid.uuid5(SIGNAL_NAMESPACE, content))


class SignalResult(BaseModel):
    signal_id: str
    lead_id: str
    status: Literal["recorded", "duplicate"]
    lead_created: bool = False


async def record_signal(
    session: AsyncSession, context: IngestContext, signal: SignalInput,
    correlation_id: str | None = None,
) -> SignalResult:
    at = signal.occurred_at or context.clock.now()
    lead_created = False
    if signal.lead_id:
        await lead_writes.flush(session)
        row = await repository.find_lead(session, signal.lead_id)
        if row is None:
            raise ProblemError(404, "Lead not found", f"No lead has the id {signal.lead_id!r}.")
        lead_id: str = row["id"]
    else:
        assert signal.email is not None
        accepted = await service.submit_lead(
            session, context, LeadSubmission(email=signal.email, source=signal.source),
            Intake(channel="signal", correlation_id=correlation_id),
        )
        lead_id, lead_created = accepted.lead_id, accepted.status == "created"
    signal_id = signal.stable_id(lead_id, at)
    event = SignalRecorded(
        event_id=uuid.uuid5(SIGNAL_NAMESPACE, signal_id), producer=service.PRODUCER,
        lead_id=lead_id, correlation_id=correlation_id, occurred_at=context.clock.now(),
        data=SignalRecordedData(
            signal_id=signal_id, signal_type=signal.type, signal_at=at, source=signal.source,
            url=signal.url, properties=signal.properties,
        ),
    )
    await lead_writes.flush(session)  # the lead's own event first, then the signal's
    try:
        async with session.begin_nested():
            await context.outbox.add(session, event)
    except IntegrityError:
        return SignalResult(signal_id=signal_id, lead_id=lead_id, status="duplicate",
                            lead_created=lead_created)
    return SignalResult(signal_id=signal_id, lead_id=lead_id, status="recorded",
                        lead_created=lead_created)
