"""The event contracts the services exchange over Kafka: one envelope, one model per event type.

Every message value is the JSON of one event: the envelope fields (`event_id`, `type`,
`schema_version`, `occurred_at`, `producer`, `correlation_id`, `lead_id`) plus a typed `data`
object. Messages are keyed by `lead_id`, so all events of one lead stay in order on one partition.

`decode_event` parses through one discriminated union. An event of a type this code does not
know, or of a newer schema version than it understands, is logged and skipped: a consumer never
crashes on what a newer producer sends.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

logger = logging.getLogger(__name__)

Temperature = Literal["cold", "warm", "hot"]


class Contract(BaseModel):
    """Base of every event payload: immutable, and tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class LeadProfile(Contract):
    """What is known about a lead: the canonical fields ingest normalised."""

    email: str
    name: str | None = None
    company: str | None = None
    phone: str | None = None
    country: str | None = None
    source: str | None = None
    job_title: str | None = None
    employee_count: int | None = None
    demo_requested: bool = False
    account_key: str | None = None


class LeadReceivedData(Contract):
    lead: LeadProfile


class LeadUpdatedData(Contract):
    lead: LeadProfile
    changed_fields: list[str]


class ScoreLine(Contract):
    """One rule's contribution to a score."""

    rule_id: str
    points: float
    reason: str


class LeadScoredData(Contract):
    score: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    breakdown: list[ScoreLine]
    lead: LeadProfile


class AssignmentOfferedData(Contract):
    assignment_id: str
    sdr_id: str
    deadline_at: AwareDatetime
    attempt: int


class AssignmentAcceptedData(Contract):
    assignment_id: str
    sdr_id: str
    accepted_at: AwareDatetime
    within_sla: bool


class AssignmentEscalatedData(Contract):
    from_assignment_id: str
    from_sdr_id: str
    to_assignment_id: str | None
    to_sdr_id: str | None
    reason: str


class Envelope(Contract):
    """Fields every event carries, whatever its type."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    producer: str
    correlation_id: str | None = None
    lead_id: str


class LeadReceived(Envelope):
    type: Literal["lead.received"] = "lead.received"
    data: LeadReceivedData


class LeadUpdated(Envelope):
    type: Literal["lead.updated"] = "lead.updated"
    data: LeadUpdatedData


class LeadScored(Envelope):
    type: Literal["lead.scored"] = "lead.scored"
    data: LeadScoredData


class AssignmentOffered(Envelope):
    type: Literal["assignment.offered"] = "assignment.offered"
    data: AssignmentOfferedData


class AssignmentAccepted(Envelope):
    type: Literal["assignment.accepted"] = "assignment.accepted"
    data: AssignmentAcceptedData


class AssignmentEscalated(Envelope):
    type: Literal["assignment.escalated"] = "assignment.escalated"
    data: AssignmentEscalatedData


Event = Annotated[
    LeadReceived
    | LeadUpdated
    | LeadScored
    | AssignmentOffered
    | AssignmentAccepted
    | AssignmentEscalated,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_CLASSES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        LeadReceived,
        LeadUpdated,
        LeadScored,
        AssignmentOffered,
        AssignmentAccepted,
        AssignmentEscalated,
    )
}
SUPPORTED_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_CLASSES}

_ENVELOPE_PEEK: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class UndecodableEventError(ValueError):
    """A message that is not a valid event of a known type; it cannot be applied."""


def encode_event(event: Envelope) -> bytes:
    return event.model_dump_json().encode()


def decode_event(raw: bytes) -> Event | None:
    """Parse one message value; None for an unknown type or a newer schema version.

    Raises `UndecodableEventError` when a message claims a known type and version but does not
    match its contract: that is a producer bug worth keeping, not skipping silently.
    """
    try:
        peek = _ENVELOPE_PEEK.validate_json(raw)
    except ValidationError as error:
        raise UndecodableEventError(f"message value is not a JSON object: {error}") from error
    event_type = peek.get("type")
    version = peek.get("schema_version", 1)
    if event_type not in SUPPORTED_VERSIONS:
        logger.info("skipping event of unknown type %r", event_type)
        return None
    if not isinstance(version, int) or version > SUPPORTED_VERSIONS[event_type]:
        logger.info("skipping %s event of unsupported schema version %r", event_type, version)
        return None
    try:
        return EVENT_ADAPTER.validate_python(peek)
    except ValidationError as error:
        raise UndecodableEventError(f"{event_type} does not match its contract: {error}") from error



@dataclass(frozen=True)
class Topics:
    """The topic names, all under one prefix (`leadrelay` unless configured otherwise)."""

    prefix: str = "leadrelay"

    @property
    def leads(self) -> str:
        """Published by ingest: `lead.received`, `lead.updated`."""
        return f"{self.prefix}.leads"

    @property
    def scores(self) -> str:
        """Published by the scorer: `lead.scored`."""
        return f"{self.prefix}.scores"

    @property
    def assignments(self) -> str:
        """Published by the router: `assignment.*`."""
        return f"{self.prefix}.assignments"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.leads, self.scores, self.assignments)
