"""HubSpot: webhook subscriptions (a JSON array of thin events) and workflow webhooks (a contact).

Signature v3. Thin events carry only the contact's id, never its email: each is kept as a
lead-less submission for audit, keyed by `portalId:subscriptionId:eventId` so a redelivery is
a replay. A contact creation, property change or restore names its contact (`contact_id`):
when the source has a private app token, the contact is fetched from the CRM
(`services.ingest.crm_fetches`) and becomes a lead then. A workflow webhook posts the contact
with its `properties`, which become a lead; it carries no event id, so its replay key is the
signature's timestamp and the SHA-256 of the body (`workflow:<ms>:sha256:<hex>`): the same
request sent again is a duplicate, a new request of the same contact is a new submission.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.ingest.signatures import verify_hubspot_v3
from services.ingest.vendors import Delivery, Entry, PayloadError, json_body

CONTACT_PROPERTIES: dict[str, str] = {
    "email": "email", "firstname": "first_name", "lastname": "last_name",
    "company": "company", "phone": "phone", "mobilephone": "phone", "country": "country",
    "jobtitle": "job_title", "website": "website", "industry": "industry",
    "numberofemployees": "employee_count", "annualrevenue": "annual_revenue",
    "hs_language": "language",
}
"""A HubSpot contact's default properties -> the canonical field each fills; a source's own
`field_mapping` is added to (and overrides) these."""

FETCHED_EVENTS = frozenset({"contact.creation", "contact.propertyChange", "contact.restore"})
GENERIC_FETCHED_EVENTS = frozenset({"object.creation", "object.propertyChange", "object.restore"})
CONTACT_OBJECT_TYPE = "0-1"
"""New-platform apps send `object.*` events with `objectTypeId`; `0-1` is the contact."""
MAX_OBJECT_ID_DIGITS = 20


def verify(delivery: Delivery, secrets: Sequence[str], now: datetime) -> None:
    verify_hubspot_v3(
        secrets,
        method=delivery.method,
        url=delivery.signing_url or delivery.url,
        body=delivery.body,
        timestamp=delivery.headers.get("x-hubspot-request-timestamp"),
        signature=delivery.headers.get("x-hubspot-signature-v3"),
        now=now,
    )


def entries(delivery: Delivery) -> list[Entry]:
    payload = json_body(delivery)
    if isinstance(payload, list):
        return [_event(event) for event in payload]
    if isinstance(payload, dict):
        stamp = delivery.headers.get("x-hubspot-request-timestamp", "")
        identity = f"workflow:{stamp}:sha256:{hashlib.sha256(delivery.body).hexdigest()}"
        return [Entry(external_id=identity, fields=_properties(payload))]
    raise PayloadError("a HubSpot webhook is a JSON array of events or a contact object")


def _event(event: Any) -> Entry:
    if not isinstance(event, dict) or "eventId" not in event:
        raise PayloadError("each HubSpot event is an object with an eventId")
    key = f"{event.get('portalId')}:{event.get('subscriptionId')}:{event['eventId']}"
    return Entry(external_id=key, fields=_properties(event), contact_id=_fetched_contact(event))


def _fetched_contact(event: dict[str, Any]) -> str | None:
    """The contact id of an event whose contact should be fetched: a creation, a property
    change or a restore (never a deletion: the contact is gone)."""
    kind = event.get("subscriptionType") or event.get("eventType")
    is_contact = kind in FETCHED_EVENTS or (
        kind in GENERIC_FETCHED_EVENTS and str(event.get("objectTypeId")) == CONTACT_OBJECT_TYPE
    )
    object_id = event.get("objectId")
    if not is_contact or isinstance(object_id, bool):
        return None
    text = str(object_id) if isinstance(object_id, int | str) else ""
    if text.isascii() and text.isdigit() and len(text) <= MAX_OBJECT_ID_DIGITS:
        return text.lstrip("0") or None
    return None


def _properties(contact: dict[str, Any]) -> dict[str, Any]:
    """`properties.<name>` as plain values (`{"value": ...}` in the v1 contact format)."""
    properties = contact.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {
        name: value.get("value") if isinstance(value, dict) else value
        for name, value in properties.items()
    }
