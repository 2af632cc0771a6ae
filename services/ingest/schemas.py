"""The shapes ingest's HTTP API accepts and returns."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.ingest.normalise import normalise_country, normalise_email

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class LeadSubmission(BaseModel):
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
                    "source": "website",
                    "demo_requested": True,
                }
            ]
        },
    )

    email: Annotated[str, Field(max_length=320), AfterValidator(normalise_email)]
    name: Text200 | None = None
    company: Text200 | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)] | None = None
    country: Annotated[str, AfterValidator(normalise_country)] | None = None
    source: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    job_title: Text200 | None = None
    employee_count: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    demo_requested: bool = False


class LeadAccepted(BaseModel):
    lead_id: str
    status: Literal["created", "merged", "unchanged"]


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
    demo_requested: bool
    account_key: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
