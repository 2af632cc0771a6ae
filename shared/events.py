"""The event contracts the services exchange over Kafka: one envelope, one model per event type.

Every message value is the JSON of one event: the envelope fields (`event_id`, `type`,
`schema_version`, `occurred_at`, `producer`, `correlation_id`, `lead_id`) plus a typed `data`
object. Messages are keyed by `lead_id`, so all events of one lead stay in order on one partition.

`decode_event` parses through one discriminated union. An event of a type this code does not
know, or of a newer schema version than it understands, is logged and skipped: a consumer never
crashes on what a newer producer sends.

Schema versions: a new optional field (with a default, so older events still decode) keeps the
type's version, since older consumers ignore fields they do not know; a change that older
consumers would misread (a field removed, renamed, retyped or made required) needs a new version.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.request_types import DateTimeText, Flag
from shared.sealing import (
    SEALED_VERSION,
    BrokenSealError,
    KeyLookup,
    is_sealable,
    open_document,
)

logger = logging.getLogger(__name__)

Temperature = Literal["cold", "warm", "hot"]
Stage = Literal[
    "lead", "mql", "sal", "sql", "opportunity", "customer", "recycled", "disqualified"
]
"""Lifecycle stages (see DOMAIN.md): lead -> MQL -> SAL -> SQL -> opportunity -> customer."""

SignalType = str
"""`email_open`, `email_click`, `page_view`, `content_download`, `webinar_registered`,
`webinar_attended`, `demo_request`, `quote_request`, `pricing_page_view`, `trial_signup`,
`product_usage`, `unsubscribe`, `email_bounce`, or a custom type (`custom:<name>`)."""


class Contract(BaseModel):
    """Base of every event payload: immutable, and tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Consent(Contract):
    """What the lead agreed to, as the form or tool reported it."""

    email: Flag | None = None
    phone: Flag | None = None
    legal_basis: str | None = None
    given_at: DateTimeText | None = None


class Attribution(Contract):
    """Where the lead came from, for reporting per source, channel and campaign."""

    channel: str | None = None
    campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    referrer: str | None = None
    landing_page: str | None = None


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
    demo_requested: Flag = False
    account_key: str | None = None
    industry: str | None = None
    annual_revenue: float | None = None
    website: str | None = None
    language: str | None = None
    """ISO 639-1 code, lower case (`fr`, `en`), for routing to a rep who speaks it."""
    consent: Consent | None = None
    attribution: Attribution | None = None


class LeadReceivedData(Contract):
    lead: LeadProfile


class LeadUpdatedData(Contract):
    lead: LeadProfile
    changed_fields: list[str]


class LeadErasedData(Contract):
    """The lead's personal data must be removed everywhere (right to erasure)."""

    reason: str = "erasure_request"


class SignalRecordedData(Contract):
    """A behavioural event of a known lead: an email open, a download, a demo request..."""

    signal_id: str
    """Stable id of this signal (the sender's id when given), so a replay counts once."""
    signal_type: SignalType
    signal_at: AwareDatetime
    """When the behaviour happened (not when it was received)."""
    source: str | None = None
    url: str | None = None
    properties: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class ScoreLine(Contract):
    """One rule's contribution to a score."""

    rule_id: str
    points: float
    reason: str
    raw_points: float | None = None
    """Points before decay; `points` is what counts now."""
    evidence: list[str] = Field(default_factory=list)
    """Ids of the signals (the 10 most recent, newest first) or field names that triggered the
    rule."""


class LeadScoredData(Contract):
    score: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    breakdown: list[ScoreLine]
    lead: LeadProfile
    stage: Stage = "lead"
    buying_signal: bool = False
    received_at: AwareDatetime | None = None
    """When ingest received the lead (its first `lead.received`); None from older scorers."""


class LeadStageChangedData(Contract):
    from_stage: Stage
    to_stage: Stage
    reason: str | None = None
    """Why: a reason code for recycled/disqualified, the rule for MQL, the CRM's note."""
    cause_event_id: str | None = None


class Bant(Contract):
    """The SDR's qualification answers."""

    budget: str | None = None
    authority: str | None = None
    need: str | None = None
    timing: str | None = None
    notes: str | None = None


class AssignmentOfferedData(Contract):
    assignment_id: str
    sdr_id: str
    deadline_at: AwareDatetime
    attempt: int
    team_id: str | None = None
    role: str = "sdr"
    """`sdr`, or `ae` for the hand-over of a qualified lead."""
    rule_id: str | None = None
    rules_version: str | None = None


class AssignmentAcceptedData(Contract):
    assignment_id: str
    sdr_id: str
    accepted_at: AwareDatetime
    within_sla: bool


class AssignmentContactedData(Contract):
    assignment_id: str
    sdr_id: str
    contacted_at: AwareDatetime
    within_sla: bool


class AssignmentQualifiedData(Contract):
    assignment_id: str
    sdr_id: str
    qualified_at: AwareDatetime
    bant: Bant


class AssignmentRejectedData(Contract):
    assignment_id: str
    sdr_id: str
    reason_code: str
    note: str | None = None


class AssignmentDisqualifiedData(Contract):
    assignment_id: str
    sdr_id: str
    reason_code: str
    note: str | None = None


class AssignmentEscalatedData(Contract):
    from_assignment_id: str
    from_sdr_id: str
    to_assignment_id: str | None
    to_sdr_id: str | None
    reason: str


class LeadNurtureData(Contract):
    """The lead is not for sales now: back to marketing's nurturing programmes."""

    reason: str
    temperature: Temperature | None = None
    score: float | None = None


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


class LeadErased(Envelope):
    type: Literal["lead.erased"] = "lead.erased"
    data: LeadErasedData


class SignalRecorded(Envelope):
    type: Literal["signal.recorded"] = "signal.recorded"
    data: SignalRecordedData


class LeadScored(Envelope):
    type: Literal["lead.scored"] = "lead.scored"
    data: LeadScoredData


class LeadStageChanged(Envelope):
    type: Literal["lead.stage_changed"] = "lead.stage_changed"
    data: LeadStageChangedData


class AssignmentOffered(Envelope):
    type: Literal["assignment.offered"] = "assignment.offered"
    data: AssignmentOfferedData


class AssignmentAccepted(Envelope):
    type: Literal["assignment.accepted"] = "assignment.accepted"
    data: AssignmentAcceptedData


class AssignmentContacted(Envelope):
    type: Literal["assignment.contacted"] = "assignment.contacted"
    data: AssignmentContactedData


class AssignmentQualified(Envelope):
    type: Literal["assignment.qualified"] = "assignment.qualified"
    data: AssignmentQualifiedData


class AssignmentRejected(Envelope):
    type: Literal["assignment.rejected"] = "assignment.rejected"
    data: AssignmentRejectedData


class AssignmentDisqualified(Envelope):
    type: Literal["assignment.disqualified"] = "assignment.disqualified"
    data: AssignmentDisqualifiedData


class AssignmentEscalated(Envelope):
    type: Literal["assignment.escalated"] = "assignment.escalated"
    data: AssignmentEscalatedData


class LeadNurture(Envelope):
    type: Literal["lead.nurture"] = "lead.nurture"
    data: LeadNurtureData


Event = Annotated[
    LeadReceived
    | LeadUpdated
    | LeadErased
    | SignalRecorded
    | LeadScored
    | LeadStageChanged
    | AssignmentOffered
    | AssignmentAccepted
    | AssignmentContacted
    | AssignmentQualified
    | AssignmentRejected
    | AssignmentDisqualified
    | AssignmentEscalated
    | LeadNurture,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_CLASSES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        LeadReceived,
        LeadUpdated,
        LeadErased,
        SignalRecorded,
        LeadScored,
        LeadStageChanged,
        AssignmentOffered,
        AssignmentAccepted,
        AssignmentContacted,
        AssignmentQualified,
        AssignmentRejected,
        AssignmentDisqualified,
        AssignmentEscalated,
        LeadNurture,
    )
}
SUPPORTED_VERSIONS: dict[str, int] = {
    name: SEALED_VERSION if is_sealable(name) else 1 for name in EVENT_CLASSES
}
"""Version 2 of a type is version 1 with its personal fields sealed (`shared.sealing`)."""

_ENVELOPE_PEEK: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class UndecodableEventError(ValueError):
    """A message that is not a valid event of a known type; it cannot be applied."""


def encode_event(event: Envelope) -> bytes:
    return event.model_dump_json().encode()


def decode_event(
    raw: bytes, wanted: Container[str] | None = None, keys: KeyLookup | None = None
) -> Event | None:
    """Parse one message value; None for an unknown type, a newer schema version, or a type
    not in `wanted` (when given: what the consumer handles, so the rest is not validated).

    A sealed event is opened with its lead's key from `keys`; None when it cannot be (the
    lead is erased, or no `keys` were given): the event is an erased lead's, and skipped.

    Raises `UndecodableEventError` when a message claims a known type and version but does not
    match its contract: that is a producer bug worth keeping, not skipping silently.
    """
    try:
        peek = _ENVELOPE_PEEK.validate_json(raw)
    except ValidationError as error:
        raise UndecodableEventError(
            f"message value is not a JSON object: {_without_values(error)}") from error
    event_type = peek.get("type")
    if wanted is not None and event_type not in wanted:
        return None
    version = peek.get("schema_version", 1)
    if event_type not in SUPPORTED_VERSIONS:
        logger.info("skipping event of unknown type %r", event_type)
        return None
    if not isinstance(version, int) or version > SUPPORTED_VERSIONS[event_type]:
        logger.info("skipping %s event of unsupported schema version %r", event_type, version)
        return None
    try:
        opened = open_document(peek, keys)
    except BrokenSealError as error:
        raise UndecodableEventError(str(error)) from error
    if opened is None:
        return None
    try:
        return EVENT_ADAPTER.validate_python(opened)
    except ValidationError as error:
        raise UndecodableEventError(
            f"{event_type} does not match its contract: {_without_values(error)}") from error


def _without_values(error: ValidationError) -> str:
    """The validation errors without the values that failed: they may be personal data."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )



@dataclass(frozen=True)
class Topics:
    """The topic names, all under one prefix (`leadrelay` unless configured otherwise)."""

    prefix: str = "leadrelay"

    @property
    def leads(self) -> str:
        """Published by ingest, the fast lane: `lead.received`, `lead.updated`, `lead.erased`,
        and the buying signals (`signal.recorded` of a demo or quote request)."""
        return f"{self.prefix}.leads"

    @property
    def signals(self) -> str:
        """Published by ingest, the bulk lane: `signal.recorded` of every other signal (email
        opens, clicks, page views...), which a campaign sends by the thousand."""
        return f"{self.prefix}.signals"

    @property
    def scores(self) -> str:
        """Published by the scorer: `lead.scored`, `lead.stage_changed`, `lead.erased` (relayed)."""
        return f"{self.prefix}.scores"

    @property
    def assignments(self) -> str:
        """Published by the router: `assignment.*`, `lead.nurture`."""
        return f"{self.prefix}.assignments"

    @property
    def all(self) -> tuple[str, ...]:
        return (self.leads, self.signals, self.scores, self.assignments)
