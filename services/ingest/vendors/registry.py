"""The adapter for each kind of webhook source."""

from __future__ import annotations

from services.ingest.vendors import (
    Adapter,
    hubspot,
    standard_webhooks,
    typeform,
    webflow,
    zapier,
)

ADAPTERS: dict[str, Adapter] = {
    "hubspot": hubspot,
    "typeform": typeform,
    "webflow": webflow,
    "zapier": zapier,
    "standard_webhooks": standard_webhooks,
}

MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "zapier": ("application/json", "application/x-www-form-urlencoded"),
}
"""Media types a kind may send; JSON only when not listed."""
