"""The shapes router's HTTP API accepts and returns, and the webhook it sends to SDRs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    StringConstraints,
    UrlConstraints,
)

from shared.events import Temperature

AssignmentStatus = Literal["offered", "accepted", "escalated"]

WebhookUrl = Annotated[
    AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])
]


class SdrCreate(BaseModel):
    """An SDR joining the roster. `webhook_url` receives an `assignment.offered` POST per offer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Grace Hopper",
                    "email": "grace@seller.example",
                    "webhook_url": "https://hooks.seller.example/leadrelay/grace",
                }
            ]
        },
    )

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    email: Annotated[EmailStr, AfterValidator(str.lower)]
    webhook_url: WebhookUrl
    active: bool = True


class SdrView(BaseModel):
    id: str
    name: str
    email: str
    webhook_url: str
    active: bool
    last_assigned_at: AwareDatetime | None
    created_at: AwareDatetime


class AssignmentView(BaseModel):
    id: str
    lead_id: str
    sdr_id: str
    status: AssignmentStatus
    attempt: int
    offered_at: AwareDatetime
    deadline_at: AwareDatetime
    accepted_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    lead: dict[str, Any]


class OfferedLead(BaseModel):
    name: str | None
    company: str | None
    email: str
    phone: str | None


class OfferNotice(BaseModel):
    """The JSON body POSTed to an SDR's webhook when a lead is offered to them.

    Delivery is at least once: a retry carries the same `Idempotency-Key` header, and
    `assignment_id` names the offer. Accepting is a `POST` to `accept_url` before `deadline_at`.
    """

    event: Literal["assignment.offered"] = "assignment.offered"
    assignment_id: str
    lead_id: str
    sdr_id: str
    attempt: int
    lead: OfferedLead
    score: float
    temperature: Temperature
    deadline_at: AwareDatetime
    accept_url: str
