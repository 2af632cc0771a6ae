"""Behavioural signals of leads: recorded and published as `signal.recorded`, once each.

A signal names its lead by id or by email; an email nobody has sent before creates the lead
(a lead is anyone who showed interest). Each signal has a stable id, the sender's when given,
else derived from what it says, so that a sender retrying a signal does not count it twice:
the event id is derived from the signal id and the outbox refuses it a second time.
How a batch of them is stored, and on which topic each goes: `signal_batches`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.ingest.normalise import normalise_email
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
        # A blank one is an absent one, as everywhere else: `"lead_id": ""` with an email names
        # the email's lead.
        if self.lead_id is not None and not self.lead_id.strip():
            self.lead_id = None
        if self.email is not None and not self.email.strip():
            self.email = None
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
