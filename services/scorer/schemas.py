"""The shapes scorer's HTTP API accepts and returns."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.events import LeadProfile, ScoreLine, Stage, Temperature
from shared.request_types import DateTimeText


class LeadScoreView(BaseModel):
    """A lead's latest score, as of `updated_at`: `score` is `fit + engagement`, explained line
    by line (rule id, raw points, decayed points, the evidence), with its lifecycle stage."""

    lead_id: str
    score: float
    fit: float
    engagement: float
    temperature: Temperature
    stage: Stage
    buying_signal: bool
    model_version: str
    scored_at: AwareDatetime
    """When the score last changed in a way worth publishing (a `lead.scored` went out)."""
    updated_at: AwareDatetime
    """When the score was last computed."""
    stage_changed_at: AwareDatetime | None
    next_check_at: AwareDatetime | None
    """When decay alone will move the lead to another temperature band, if it ever does."""
    breakdown: list[ScoreLine]


class StageChangeView(BaseModel):
    """One step of a lead's lifecycle, with its time and cause."""

    from_stage: Stage
    to_stage: Stage
    reason: str | None
    cause: str
    """The event type that caused it (`assignment.accepted`...), `signal`, `profile`,
    `decay`, or `crm` for `POST /v1/leads/{id}/stage`."""
    cause_event_id: str | None
    rule_ids: list[str] | None
    """For MQL: the rules that added points when the lead became MQL."""
    changed_at: AwareDatetime


class StageChangeRequest(BaseModel):
    """A CRM reporting a lead's progress (or its end)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["opportunity", "customer", "recycled", "disqualified"]
    reason: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _reason_when_leaving_the_funnel(self) -> StageChangeRequest:
        if self.stage in ("recycled", "disqualified") and not self.reason:
            raise ValueError(f"moving a lead to {self.stage!r} needs a `reason`")
        return self


class StageChangeResult(BaseModel):
    lead_id: str
    stage: Stage
    moved: bool
    """False when the lead was in that stage already (nothing changed, nothing published)."""


class ScoringModelView(BaseModel):
    """The scoring model in force."""

    version: str
    source: str
    """`file` (published at start from the YAML file) or `api`."""
    published_at: AwareDatetime
    document: dict[str, Any]


class SignalSample(BaseModel):
    """A signal of the sample lead scored by a preview."""

    model_config = ConfigDict(extra="forbid")

    signal_id: str = Field(min_length=1, max_length=128)
    signal_type: str = Field(min_length=1, max_length=64)
    signal_at: DateTimeText
    url: str | None = Field(default=None, max_length=2048)


class PreviewRequest(BaseModel):
    """A sample lead and its signals, scored against a draft model (the one in force if none)."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] | None = None
    lead: LeadProfile
    signals: list[SignalSample] = Field(default_factory=list, max_length=10_000)
    at: DateTimeText | None = None
    """The moment to score at (decay is relative to it); now if unset."""


class PreviewView(BaseModel):
    score: float
    fit: float
    engagement: float
    temperature: Temperature
    mql: bool
    buying_signal: bool
    model_version: str
    at: AwareDatetime
    next_change_at: AwareDatetime | None
    breakdown: list[ScoreLine]


class RejectionsBySource(BaseModel):
    source: str
    outcome: Literal["rejected", "disqualified"]
    reason_code: str
    count: int


class RejectionsByRule(BaseModel):
    rule_id: str
    outcome: Literal["rejected", "disqualified"]
    reason_code: str
    count: int


class RejectionReport(BaseModel):
    """Why sales turned leads down, by the lead's source and by the rules that made it MQL."""

    since: AwareDatetime | None
    by_source: list[RejectionsBySource]
    by_rule: list[RejectionsByRule]


class ChannelCostBody(BaseModel):
    """What one lead of a channel costs (ad spend, event fees... divided by its leads)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"cost_per_lead": "30.00", "currency": "EUR"}]})

    cost_per_lead: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$",
                          description="ISO 4217 code")


class ChannelCostView(ChannelCostBody):
    channel: str
    updated_at: AwareDatetime


class FunnelCost(BaseModel):
    currency: str
    cost_per_lead: Decimal
    spend: Decimal = Field(description="Leads x cost per lead")
    cost_per_sql: Decimal | None = Field(description="None: no SQL yet")
    cost_per_customer: Decimal | None = Field(description="None: no customer yet")


class FunnelSummary(BaseModel):
    counts: dict[str, int] = Field(description="Leads that reached each stage (or a later one)")
    conversion: dict[str, float | None] = Field(
        description="Each step's rate (`mql_to_sal`...) and `lead_to_customer`; None: none "
        "reached the step's first stage")
    median_seconds_in_stage: dict[str, float | None] = Field(
        description="From entering a stage to entering the next, among leads that did both")
    cost: FunnelCost | None = Field(default=None,
                                    description="Per channel, when its cost per lead is set")


class FunnelReport(BaseModel):
    """Leads received in the period, followed through the lifecycle to where they are now."""

    since: AwareDatetime
    until: AwareDatetime
    stages: list[str]
    overall: FunnelSummary
    by_source: dict[str, FunnelSummary]
    by_channel: dict[str, FunnelSummary] = Field(
        description="By the lead's attribution channel (`unknown` when it has none)")
