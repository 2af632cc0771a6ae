"""The adapter for each kind of webhook source."""

from __future__ import annotations

from collections.abc import Mapping

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

VENDOR_FIELDS: dict[str, dict[str, str]] = {"hubspot": hubspot.CONTACT_PROPERTIES}
"""Field names a kind's payloads use -> canonical fields, before the source's own mapping."""


def field_mapping_of(kind: str, source_mapping: Mapping[str, str]) -> dict[str, str]:
    """The mapping a source's fields go through: its vendor's names, then its own."""
    return {**VENDOR_FIELDS.get(kind, {}), **source_mapping}
