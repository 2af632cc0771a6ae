"""The shapes router's HTTP API accepts and returns, and the notifications it sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    UrlConstraints,
    field_validator,
    model_validator,
)

from services.router.routing import Presence, Role, parse_working_hours
from services.router.rules import Rule, SegmentBand
from shared.events import Bant, Temperature
from shared.request_types import DateTimeText, Flag, NotAFlag

AssignmentStatus = Literal[
    "offered", "accepted", "contacted", "qualified", "rejected", "disqualified", "escalated",
    "erased",
]
RejectReason = Literal[
    "wrong_territory", "wrong_language", "wrong_segment", "at_capacity", "conflict_of_interest",
    "existing_customer", "out_of_office", "other",
]
DisqualifyReason = Literal[
    "no_budget", "no_authority", "no_need", "bad_timing", "unreachable", "competitor",
    "student_or_personal", "spam", "duplicate", "other",
]

MAX_CAPACITY = 10_000
"""Open assignments a person may hold at once; beyond any team's reach, within a column's."""

WebhookUrl = Annotated[
    AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=8)]
WorkingHours = dict[str, list[Annotated[str, StringConstraints(max_length=11)]]]


def _valid_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


def _valid_hours(value: WorkingHours | None) -> WorkingHours | None:
    try:
        parse_working_hours(value)
    except ValueError as error:
        raise ValueError(f"working hours: {error}") from None
    return value


Secret = Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/=]{16,}$")]
Timezone = Annotated[str, AfterValidator(_valid_timezone)]
Hours = Annotated[WorkingHours | None, AfterValidator(_valid_hours)]


class OutOfOffice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: DateTimeText
    end: DateTimeText

    @model_validator(mode="after")
    def _ordered(self) -> OutOfOffice:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class PersonFields(BaseModel):
    """Everything about a person but who they are; every field optional (a PATCH)."""

    model_config = ConfigDict(extra="forbid")

    teams: list[Name] | None = Field(default=None, description="Team names")
    languages: list[Code] | None = None
    territories: list[Code] | None = Field(default=None, description="Country codes")
    segments: list[Name] | None = None
    timezone: Timezone | None = None
    working_hours: Hours = Field(
        default=None, description='{"mon": ["09:00-12:00", "13:00-17:30"], ...}; none: always'
    )
    out_of_office: list[OutOfOffice] | None = None
    presence: Presence | None = None
    capacity: Annotated[int, Field(ge=0, le=MAX_CAPACITY), NotAFlag] | None = None
    weight: Annotated[float, Field(gt=0, le=100), NotAFlag] | None = None
    webhook_url: WebhookUrl | None = None
    webhook_secret: Secret | None = None
    slack_webhook_url: WebhookUrl | None = None
    active: Flag | None = None


class PersonCreate(PersonFields):
    """A person joining the roster. Their API token is in the answer, and only there."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "name": "Grace Hopper", "email": "grace@seller.example", "role": "sdr",
            "teams": ["SDR EMEA"], "languages": ["en", "fr"], "territories": ["GB", "FR"],
            "timezone": "Europe/Paris", "working_hours": {"mon": ["09:00-18:00"]},
            "capacity": 20, "weight": 1, "webhook_url": "https://hooks.seller.example/grace",
        }]},
    )

    name: Name
    email: Annotated[EmailStr, AfterValidator(str.lower)]
    role: Role = "sdr"


class SdrCreate(BaseModel):
    """The first roster API, kept: an SDR with a webhook, in no team, always working."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    email: Annotated[EmailStr, AfterValidator(str.lower)]
    webhook_url: WebhookUrl
    active: Flag = True


class PersonView(BaseModel):
    id: str
    name: str
    email: str
    role: str
    teams: list[str] = Field(default_factory=list, description="Team ids")
    languages: list[str]
    territories: list[str]
    segments: list[str]
    timezone: str
    working_hours: dict[str, list[str]] | None
    out_of_office: list[dict[str, Any]]
    presence: str
    capacity: int | None
    weight: float
    webhook_url: str | None
    webhook_secret_set: bool = Field(description="The generic webhook has a signing secret")
    slack_webhook_set: bool = Field(
        description="A Slack webhook is set (its URL, a credential, is never shown)")
    active: bool
    paused_until: AwareDatetime | None
    last_assigned_at: AwareDatetime | None
    created_at: AwareDatetime


class PersonCreated(PersonView):
    token: str | None = Field(
        default=None, description="The person's API token; shown once, never again"
    )
    webhook_secret: str | None = Field(
        default=None, description="Signing secret of the generic webhook; shown once"
    )


SdrView = PersonCreated


class PresenceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presence: Presence


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    manager_email: Annotated[EmailStr, AfterValidator(str.lower)] | None = None
    timezone: Timezone = "UTC"
    working_hours: Hours = None


class TeamView(BaseModel):
    id: str
    name: str
    manager_id: str | None
    timezone: str
    working_hours: dict[str, list[str]] | None
    members: list[str]
    created_at: AwareDatetime


class RosterPerson(PersonCreate):
    pass


class RosterDocument(BaseModel):
    """`POST /v1/roster/import`: teams and people, matched by team name and email."""

    model_config = ConfigDict(extra="forbid")

    teams: list[TeamCreate] = Field(default_factory=list, max_length=1000)
    people: list[RosterPerson] = Field(default_factory=list, max_length=10000)


class RosterImported(BaseModel):
    teams_created: int
    teams_updated: int
    people_created: list[PersonCreated]
    people_updated: int


class RuleSetView(BaseModel):
    version: str
    rules: list[Rule]
    segments: list[SegmentBand]
    created_at: AwareDatetime | None


class AssignmentView(BaseModel):
    id: str
    lead_id: str
    sdr_id: str
    role: str
    team_id: str | None
    status: AssignmentStatus
    attempt: int
    rule_id: str | None
    rules_version: str | None
    offered_at: AwareDatetime
    deadline_at: AwareDatetime
    accepted_at: AwareDatetime | None
    contact_deadline_at: AwareDatetime | None
    contacted_at: AwareDatetime | None
    qualified_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    reason_code: str | None
    bant: dict[str, Any] | None
    lead: dict[str, Any]


class DecisionView(BaseModel):
    """Why this rep got this lead."""

    assignment_id: str
    rule_id: str | None
    rules_version: str | None
    pools: list[dict[str, Any]] = Field(
        description="Each pool tried, in order: its candidates, exclusions, scores, tie-break"
    )
    chosen: str
    summary: str | None = Field(
        default=None, description="Who got the lead and why, in plain words")
    explained: list[str] = Field(
        default_factory=list,
        description="The decision in plain words: the summary, then each pool's excluded reps "
        "(the lead's value against the rep's) and the figures compared, people named")
    earlier_attempts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A hand-over to an AE that waited: each earlier try, when, and why "
        "nobody was eligible (its pools, as above)",
    )


class HandoverView(BaseModel):
    """A qualified lead's hand-over to an AE."""

    id: str
    lead_id: str
    from_assignment_id: str
    status: Literal["waiting", "offered", "closed"]
    requested_at: AwareDatetime
    attempts: int
    last_attempt_at: AwareDatetime
    next_attempt_at: AwareDatetime | None
    manager_notified_at: AwareDatetime | None
    assignment_id: str | None
    handed_at: AwareDatetime | None
    attempt_log: list[dict[str, Any]]


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason_code: RejectReason
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class DisqualifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason_code: DisqualifyReason
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class QualifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bant: Bant

    @field_validator("bant")
    @classmethod
    def _answered(cls, bant: Bant) -> Bant:
        if not any((bant.budget, bant.authority, bant.need, bant.timing)):
            raise ValueError("at least one BANT answer is needed to qualify a lead")
        return bant


class QueuedLead(BaseModel):
    lead_id: str
    team_id: str
    queued_at: AwareDatetime
    score: float
    temperature: str
    team_opens_at: AwareDatetime | None = Field(
        default=None, description="When the team is next at work (now when it is open; "
        "none when it has hours but no shift)",
    )


class DeliveryView(BaseModel):
    id: int
    channel: str
    kind: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: AwareDatetime | None
    log: list[dict[str, Any]]


class OfferedLead(BaseModel):
    name: str | None = None
    company: str | None = None
    email: str | None = None
    phone: str | None = None
    country: str | None = None
    source: str | None = None


class OfferNotice(BaseModel):
    """The JSON body POSTed to a rep's generic webhook (signed with Standard Webhooks).

    Delivery is at least once: a retry carries the same `webhook-id` header. `kind` is
    `offer`, `reminder` or, for managers, `escalation`, `contact_overdue` or
    `handover_waiting`. `accept_url` (offers and reminders) opens a page whose button accepts;
    `claim_url` (escalations: the lead waits in the team's queue) one whose button claims it.
    """

    type: str = "assignment.offered"
    kind: str = "offer"
    timestamp: AwareDatetime
    assignment_id: str
    lead_id: str
    sdr_id: str
    role: str
    attempt: int
    lead: OfferedLead
    score: float
    temperature: Temperature
    why: list[str] = Field(description="The lead's score, explained rule by rule")
    why_you: str | None = Field(
        default=None, description="Why this rep got the lead, in plain words (offers, reminders)")
    deadline_at: AwareDatetime
    accept_url: str | None = None
    claim_url: str | None = None


def countdown(deadline: datetime, now: datetime) -> str:
    seconds = max(0, int((deadline - now).total_seconds()))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
