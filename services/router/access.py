"""Who is calling: the admin, a manager or a rep, from the bearer token; signed action links.

Every person gets an API token when they join the roster (only its SHA-256 is stored). The
admin token comes from `LEADRELAY_ADMIN_TOKEN`. A rep sees and acts on their own assignments
only (anything else is a 404, so ids cannot be probed); a manager also sees their teams'.
The accept link in a notification carries an HMAC of the assignment id and the action, so it
works when clicked, for that one assignment and action only.
"""

from __future__ import annotations

import base64
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


def action_token(key: str, assignment_id: str, action: str) -> str:
    digest = hmac.new(key.encode(), f"{assignment_id}:{action}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode().rstrip("=")


def valid_action_token(key: str, assignment_id: str, action: str, token: str) -> bool:
    return hmac.compare_digest(action_token(key, assignment_id, action).encode(), token.encode())
