"""Webflow `form_submission` (Data API v2 `{triggerType, payload}`, and the v1 legacy shape).

Keys of `data` are the field names the site designer chose (`"First Name"`, `"Email 2"`); the
submission id is the replay key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.ingest.signatures import verify_webflow
from services.ingest.vendors import Delivery, Entry, json_body, json_object


def verify(delivery: Delivery, secrets: Sequence[str], now: datetime) -> None:
    verify_webflow(
        secrets,
        body=delivery.body,
        timestamp=delivery.headers.get("x-webflow-timestamp"),
        signature=delivery.headers.get("x-webflow-signature"),
        now=now,
    )


def entries(delivery: Delivery) -> list[Entry]:
    body = json_object(json_body(delivery), "the body")
    submission = json_object(body["payload"], "payload") if "payload" in body else body
    data = json_object(submission.get("data") or {}, "payload.data")
    identifier = submission.get("id") or submission.get("_id")
    return [Entry(external_id=str(identifier) if identifier else None, fields=dict(data))]
