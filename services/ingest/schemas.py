"""The shapes ingest's HTTP API accepts and returns.

`LeadSubmission` is the canonical lead every channel produces: the JSON API takes it as is,
forms and vendor webhooks map their fields onto it. Validating it normalises every field
(see `normalise`); fields it does not know are dropped, never stored. A blank optional field
(empty or only whitespace) is the same as an absent one, whichever field it is: it is not
checked and, in a merge, erases nothing. Date-times are ISO 8601 text and booleans `true` or
`false` (`shared.request_types`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.ingest.normalise import (
    account_key_for,
    full_name,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_language,
    normalise_legal_basis,
    normalise_phone,
    normalise_text,
    utm_from_url,
)
from shared.events import Attribution, Consent
from shared.request_types import DateTimeText, Flag, NotAFlag

Text = Annotated[str, StringConstraints(max_length=200), AfterValidator(normalise_text)]
Url = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


LegalBasis = Annotated[str, Field(max_length=40), AfterValidator(normalise_legal_basis)]
Country = Annotated[str, Field(max_length=60), AfterValidator(normalise_country)]
Website = Annotated[str, Field(max_length=300), AfterValidator(normalise_domain)]
Language = Annotated[str, Field(max_length=40), AfterValidator(normalise_language)]


class BlankIsAbsent(BaseModel):
    """Reads a blank text in any optional field as if the field were not sent; except
    `external_id`, the sender's id of the submission, not a lead field: blank, it is a `422`."""

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            name: None if (
                isinstance(value, str) and not value.strip()
                and name in cls.model_fields and not cls.model_fields[name].is_required()
                and name != "external_id"
            ) else value
            for name, value in data.items()
        }


def _blank_allowed(schema: dict[str, Any]) -> None:
    """Say in the document that a blank value is taken (as absent), where a format would
    otherwise refuse it; for an optional field, whose schema is an `anyOf`."""
    schema["anyOf"].append({"type": "string", "pattern": r"^\s*$"})


class ConsentInput(BlankIsAbsent):
    """What the lead agreed to. `given_at` defaults to the time of the submission."""

    model_config = ConfigDict(extra="ignore")

    email: Flag | None = None
    phone: Flag | None = None
    legal_basis: LegalBasis | None = None
    given_at: DateTimeText | None = Field(default=None, json_schema_extra=_blank_allowed)


class AttributionInput(BlankIsAbsent):
    """Where the lead came from. UTM parameters missing here are read from `landing_page`."""

    model_config = ConfigDict(extra="ignore")

    channel: Text | None = None
    campaign: Text | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None
    referrer: Url | None = None
    landing_page: Url | None = None

    @model_validator(mode="after")
    def _utm_from_landing_page(self) -> AttributionInput:
        for field, value in utm_from_url(self.landing_page).items():
            if not getattr(self, field):
                setattr(self, field, normalise_text(value)[:200])
        return self


class LeadSubmission(BlankIsAbsent):
    """A lead as a server or integration posts it. Only `email` is required."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "name": "Ada Lovelace",
                    "company": "Analytical Engines Ltd",
                    "country": "GB",
                    "phone": "020 7946 0000",
                    "source": "website",
                    "demo_requested": True,
                    "consent": {"email": True, "legal_basis": "consent"},
                    "attribution": {"utm_source": "linkedin", "utm_campaign": "q3-launch"},
                }
            ]
        },
    )

    email: Annotated[str, Field(max_length=320), AfterValidator(normalise_email)]
    name: Text | None = None
    first_name: Text | None = Field(
        default=None, description="Joined with `last_name` into `name` when `name` is not given"
    )
    last_name: Text | None = None
    company: Text | None = None
    country: Country | None = Field(default=None, description="ISO 3166 code or English name")
    phone: Annotated[str, Field(max_length=40)] | None = Field(
        default=None, description="Read in `country` unless it starts with `+`; stored as E.164"
    )
    source: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    job_title: Text | None = None
    employee_count: Annotated[int, Field(ge=0, le=10_000_000), NotAFlag] | None = None
    industry: Text | None = None
    annual_revenue: Annotated[
        float, Field(ge=0, le=1e13, allow_inf_nan=False), NotAFlag] | None = None
    website: Website | None = Field(default=None, description="Stored as its domain")
    language: Language | None = None
    demo_requested: Flag = False
    consent: ConsentInput | None = None
    attribution: AttributionInput | None = None

    @field_validator("phone")
    @classmethod
    def _phone_in_country(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return normalise_phone(value, info.data.get("country"))

    def profile(self, **defaults: Any) -> dict[str, Any]:
        """The canonical lead fields, JSON-ready, with `defaults` filling what is missing."""
        values = self.model_dump(mode="json", exclude={"first_name", "last_name", "external_id"})
        values["name"] = self.name or full_name(self.first_name, self.last_name)
        values["account_key"] = account_key_for(self.email, self.website)
        for field, default in defaults.items():
            given = values.get(field)
            if isinstance(default, dict):
                known = {key: item for key, item in (given or {}).items() if item is not None}
                values[field] = {**default, **known}
            elif given is None:
                values[field] = default
        return values


class LeadPost(LeadSubmission):
    """`POST /v1/leads`: a lead, with the sender's own id of the submission if it has one."""

    external_id: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="The sender's id of this submission (a CRM record id, a form entry id), "
                    "unique per source (`X-Source-Key`): sent again, it is a `duplicate` that "
                    "changes nothing",
    )


class LeadAccepted(BaseModel):
    lead_id: str
    status: Literal["created", "merged", "unchanged", "duplicate"]


class LeadView(BaseModel):
    id: str
    email: str
    name: str | None
    company: str | None
    phone: str | None
    country: str | None
    source: str | None
    job_title: str | None
    employee_count: int | None
    industry: str | None
    annual_revenue: float | None
    website: str | None
    language: str | None
    demo_requested: bool
    account_key: str | None
    consent: Consent | None
    attribution: Attribution | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
