"""Vendor adapters: how each sender signs its webhooks and where its payload keeps the lead.

Every adapter module has the same two functions: `verify(delivery, secrets, now)` checks the
signature over the raw bytes (raising `SignatureError`), and `entries(delivery)` reads the
payload into flat fields per lead, with the sender's id of each (for replay detection).
`entries` runs only after `verify` passed: nothing is parsed before the sender is proven.
A sender that gives no id gets one derived from what it signed or sent (`body_identity`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    """One webhook request as received: nothing of it parsed yet."""

    method: str
    url: str
    headers: Mapping[str, str]
    """Case-insensitive look-ups (Starlette's `Headers`)."""
    body: bytes
    signing_url: str | None = None


@dataclass(frozen=True)
class Entry:
    """One lead (or lead-less event) read from a delivery."""

    external_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    contact_id: str | None = None
    """A thin event's CRM contact: its fields are fetched from the CRM (HubSpot only)."""


class PayloadError(ValueError):
    """The payload is not what the vendor documents; answered with 422."""


class Adapter(Protocol):
    def verify(self, delivery: Delivery, secrets: Sequence[str], now: datetime) -> None: ...

    def entries(self, delivery: Delivery) -> list[Entry]: ...


def json_body(delivery: Delivery) -> Any:
    try:
        return json.loads(delivery.body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise PayloadError("the body is not JSON") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is not a JSON object")
    return value


def body_identity(content: bytes) -> str:
    """A delivery id for a sender that gives none: the SHA-256 of what it sent."""
    return "sha256:" + hashlib.sha256(content).hexdigest()
