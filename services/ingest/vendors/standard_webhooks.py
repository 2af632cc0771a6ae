"""Any sender using Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

The payload is `{type, timestamp, data}` (or its fields at the top level); `webhook-id`, the
same for every retry of a message, is the replay key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.ingest.signatures import verify_standard_webhooks
from services.ingest.vendors import Delivery, Entry, json_body, json_object


def verify(delivery: Delivery, secrets: Sequence[str], now: datetime) -> None:
    verify_standard_webhooks(
        secrets,
        body=delivery.body,
        message_id=delivery.headers.get("webhook-id"),
        timestamp=delivery.headers.get("webhook-timestamp"),
        signature=delivery.headers.get("webhook-signature"),
        now=now,
    )


def entries(delivery: Delivery) -> list[Entry]:
    body = json_object(json_body(delivery), "the body")
    data = body.get("data")
    fields = {key: value for key, value in body.items() if key not in {"data", "type", "timestamp"}}
    if isinstance(data, dict):
        fields.update(data)
    return [Entry(external_id=delivery.headers.get("webhook-id"), fields=fields)]
