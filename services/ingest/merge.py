"""The merge rule for a lead seen again: the newest non-empty value wins, blanks never erase.

Consent and attribution merge key by key under the same rule. A demo request, once made, stays
made; a consent flag is a real answer either way, so `False` (a withdrawal) does overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.normalise import is_blank

NESTED_FIELDS = frozenset({"consent", "attribution"})


def merge_profile(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `incoming` changes in `current`, with their new values."""
    changes: dict[str, Any] = {}
    for field, value in incoming.items():
        if field in NESTED_FIELDS:
            known = dict(current.get(field) or {})
            merged = {**known, **{key: item for key, item in (value or {}).items()
                                  if not is_blank(item)}}
            if merged != known:
                changes[field] = merged
        elif is_blank(value) or (field == "demo_requested" and value is False):
            continue
        elif current.get(field) != value:
            changes[field] = value
    return changes
