"""Plain HTML forms posted from a browser: fields read from the urlencoded or multipart body.

A filled honeypot field means a bot: the post is answered as a success and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.sources import Source


def is_bot(source: Source, fields: Mapping[str, Any]) -> bool:
    if not source.honeypot_field:
        return False
    value = fields.get(source.honeypot_field)
    return isinstance(value, str) and bool(value.strip())


def form_fields(source: Source, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The text fields of the form, the honeypot and file uploads left out."""
    return {
        name: value for name, value in fields.items()
        if isinstance(value, str) and name != source.honeypot_field
    }


def origin_allowed(source: Source, origin: str | None) -> bool:
    """A post without `Origin` (old browsers, servers) is allowed; a foreign origin is not."""
    return origin is None or origin in source.allowed_origins or "*" in source.allowed_origins
