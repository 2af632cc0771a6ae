"""Zapier and any generic sender: flat JSON (an object or a list of them), or a URL-encoded form.

No signature: the sender proves itself with the source's bearer token. The Zap author names
the fields; an `external_id` (or `source_id`) field is the replay key. Zapier sends no
delivery id, so a record without one is identified by what it holds: the SHA-256 of its
fields, keys sorted (`sha256:<hex>`). The same record sent again, alone or in a list, is a
duplicate; a record that differs in any field is new.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from services.ingest.signatures import verify_bearer
from services.ingest.vendors import Delivery, Entry, PayloadError, body_identity, json_body


def verify(delivery: Delivery, secrets: Sequence[str], now: datetime) -> None:
    verify_bearer(secrets, authorization=delivery.headers.get("authorization"))


def entries(delivery: Delivery) -> list[Entry]:
    content_type = delivery.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            text = delivery.body.decode()
        except UnicodeDecodeError:
            raise PayloadError("the form body is not UTF-8") from None
        return [_entry(dict(parse_qsl(text, keep_blank_values=True)))]
    payload = json_body(delivery)
    records = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(record, dict) for record in records):
        raise PayloadError("the body is a JSON object or a list of objects")
    return [_entry(record) for record in records]


def _entry(fields: dict[str, Any]) -> Entry:
    identifier = fields.get("external_id") or fields.get("source_id")
    if identifier:
        return Entry(external_id=str(identifier), fields=fields)
    record = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Entry(external_id=body_identity(record.encode()), fields=fields)
