"""Who is calling: the admin, a manager or a rep, from the bearer token; signed action links.

Every person gets an API token when they join the roster (only its SHA-256 is stored). The
admin token comes from `LEADRELAY_ADMIN_TOKEN`. A rep sees and acts on their own assignments
only (anything else is a 404, so ids cannot be probed); a manager also sees their teams'.
The accept link in a notification is signed for one assignment and action (`action_links`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    kind: str
    """`admin`, `person` or `link` (a signed action link for one assignment)."""
    person_id: str | None = None
    role: str | None = None
    team_ids: frozenset[str] = field(default_factory=frozenset)
    """Teams the person manages (managers) or belongs to."""
    assignment_id: str | None = None
    action: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def new_token() -> str:
    return "lr_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
