"""From the flat fields a form or a vendor sends to a canonical `LeadSubmission`.

A source's `field_mapping` names the canonical field of each sender field; fields it does not
name are matched by a forgiving guess (`"First Name"`, `"Email 2"`, `"e-mail"`...). Fields that
match nothing are dropped. Channels without a signature or a client to fix the input (forms,
webhooks) are lenient: an optional field that does not validate is dropped, and only the email
decides whether a lead can be created.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from services.ingest.schemas import AttributionInput, LeadSubmission

ALIASES = {
    "email": "email", "emailaddress": "email", "mail": "email", "courriel": "email",
    "name": "name", "fullname": "name", "yourname": "name",
    "firstname": "first_name", "givenname": "first_name", "prenom": "first_name",
    "lastname": "last_name", "surname": "last_name", "familyname": "last_name", "nom": "last_name",
    "company": "company", "companyname": "company", "organisation": "company",
    "organization": "company", "societe": "company",
    "phone": "phone", "phonenumber": "phone", "telephone": "phone", "tel": "phone",
    "mobile": "phone", "mobilephone": "phone",
    "country": "country", "pays": "country",
    "jobtitle": "job_title", "title": "job_title", "position": "job_title",
    "website": "website", "companywebsite": "website",
    "industry": "industry", "employees": "employee_count", "numemployees": "employee_count",
    "employeecount": "employee_count", "companysize": "employee_count",
    "annualrevenue": "annual_revenue", "language": "language",
    "demorequested": "demo_requested", "requestdemo": "demo_requested",
    "utmsource": "utm_source", "utmmedium": "utm_medium", "utmcampaign": "utm_campaign",
    "utmterm": "utm_term", "utmcontent": "utm_content", "referrer": "referrer",
    "referer": "referrer", "landingpage": "landing_page", "pageurl": "landing_page",
    "consentemail": "consent_email", "emailconsent": "consent_email",
    "consentphone": "consent_phone", "legalbasis": "legal_basis",
    "externalid": "external_id", "sourceid": "external_id", "submissionid": "external_id",
}
ATTRIBUTION_FIELDS = frozenset(AttributionInput.model_fields) - {"channel", "campaign"}
CONSENT_FIELDS = {"consent_email": "email", "consent_phone": "phone", "legal_basis": "legal_basis"}
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "oui", "checked"})
_NOT_WORD = re.compile(r"[^a-z]")


def guess_field(name: str) -> str | None:
    """The canonical field a sender's field name most likely means, if any."""
    return ALIASES.get(_NOT_WORD.sub("", name.lower()))


def canonical_fields(
    fields: Mapping[str, Any], mapping: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The submission fields (nested consent and attribution) named by `fields`' keys."""
    mapping = mapping or {}
    flat: dict[str, Any] = {}
    for name, value in fields.items():
        target = mapping.get(name) or guess_field(name)
        if target is None or value is None or (isinstance(value, str) and not value.strip()):
            continue
        flat.setdefault(target, value)
    submission: dict[str, Any] = {}
    for target, value in flat.items():
        if target in ATTRIBUTION_FIELDS:
            submission.setdefault("attribution", {})[target] = value
        elif target in CONSENT_FIELDS:
            consent = submission.setdefault("consent", {})
            consent[CONSENT_FIELDS[target]] = _truthy(value) if target != "legal_basis" else value
        elif target == "demo_requested":
            submission[target] = _truthy(value)
        else:
            submission[target] = value if isinstance(value, str) else _scalar(value)
    return submission


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in TRUE_WORDS


def _scalar(value: Any) -> str:
    """Numbers as text (a phone sent as `15550000000`); numeric fields parse the text back."""
    if isinstance(value, dict | list):
        return json.dumps(value)[:200]
    return str(value)


def lenient_submission(values: Mapping[str, Any]) -> LeadSubmission:
    """Validate `values`, dropping optional fields that do not validate.

    Raises `ValidationError` only when the email itself is missing or invalid.
    """
    current = dict(values)
    for _ in range(len(current) + 1):
        try:
            return LeadSubmission.model_validate(current)
        except ValidationError as error:
            bad = {str(item["loc"][0]) for item in error.errors() if item["loc"]}
            if not bad or "email" in bad or not bad & current.keys():
                raise
            for field in bad:
                current.pop(field, None)
    return LeadSubmission.model_validate(current)


def submission_errors(error: ValidationError) -> list[dict[str, str]]:
    """Problem-detail entries for a submission that cannot be validated."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "in": "body",
         "message": str(item["msg"])}
        for item in error.errors()
    ]

