"""HubSpot: webhook subscriptions (a JSON array of thin events) and workflow webhooks (a contact).

Signature v3. Thin events carry only the contact's id, never its email: each is kept as a
lead-less submission for audit, keyed by `portalId:subscriptionId:eventId` so a redelivery is
a replay. A workflow webhook posts the contact with its `properties`, which become a lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.ingest.signatures import verify_hubspot_v3
from services.ingest.vendors import Delivery, Entry, PayloadError, json_body


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
        return [Entry(external_id=None, fields=_properties(payload))]
    raise PayloadError("a HubSpot webhook is a JSON array of events or a contact object")


def _event(event: Any) -> Entry:
    if not isinstance(event, dict) or "eventId" not in event:
        raise PayloadError("each HubSpot event is an object with an eventId")
    key = f"{event.get('portalId')}:{event.get('subscriptionId')}:{event['eventId']}"
    return Entry(external_id=key, fields=_properties(event))


def _properties(contact: dict[str, Any]) -> dict[str, Any]:
    """`properties.<name>` as plain values (`{"value": ...}` in the v1 contact format)."""
    properties = contact.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {
        name: value.get("value") if isinstance(value, dict) else value
        for name, value in properties.items()
    }
