"""Signed action links: the Accept button of a notification, and the Claim button of a
manager's escalation notice, usable without logging in.

An accept link is `/v1/assignments/{id}/accept?token=<expiry>.<signature>`: the signature is
an HMAC-SHA256 of the assignment id, the action and the expiry (the offer's deadline plus
`LEADRELAY_ACTION_LINK_GRACE_SECONDS`), so a link works for that one assignment and action,
until then. A claim link is `/v1/queue/{lead_id}/claim?person=<id>&token=...`, signed over
the lead and the person it claims for (`claim_subject`), valid `LEADRELAY_CLAIM_LINK_SECONDS`
from the notice. Its key is derived from `LEADRELAY_ENCRYPTION_KEYS` (`SecretBox.signing_keys`):
links survive a restart and stay valid through a key rotation while the old key is listed.

Opening a link (a GET, as a chat button or a mail client does) shows a confirmation page; its
button POSTs the token in the form body. The token never reaches a log: `RedactActionTokens`
rewrites `token=...` in uvicorn's access log lines (the path and query of the GET).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum

LINK_PURPOSE = "router action links"
LINK_ACTIONS = frozenset({"accept", "claim"})
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']+")


class LinkCheck(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


def _signature(key: bytes, assignment_id: str, action: str, expires: int) -> str:
    digest = hmac.new(key, f"{assignment_id}:{action}:{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode().rstrip("=")


def link_token(keys: Sequence[bytes], assignment_id: str, action: str, expires_at: datetime) -> str:
    """The token of a link for `action` on `assignment_id`, valid until `expires_at`."""
    expires = int(expires_at.timestamp())
    return f"{expires}.{_signature(keys[0], assignment_id, action, expires)}"


def claim_subject(lead_id: str, person_id: str) -> str:
    """What a claim link signs: the queued lead and the person who may claim it by the link."""
    return f"queue:{lead_id}:{person_id}"


def link_expiry(deadline_at: datetime, grace_seconds: float) -> datetime:
    return deadline_at + timedelta(seconds=grace_seconds)


def check_link(
    keys: Sequence[bytes], assignment_id: str, action: str, token: str, now: datetime
) -> LinkCheck:
    """Whether `token` is a link for `action` on `assignment_id` (any key), and unexpired."""
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or not signature or action not in LINK_ACTIONS:
        return LinkCheck.INVALID
    expires = int(expires_text)
    signed = any(
        hmac.compare_digest(_signature(key, assignment_id, action, expires).encode(),
                            signature.encode())
        for key in keys
    )
    if not signed:
        return LinkCheck.INVALID
    if now > datetime.fromtimestamp(expires, UTC):
        return LinkCheck.EXPIRED
    return LinkCheck.VALID


class RedactActionTokens(logging.Filter):
    """Replaces every `token=...` in a log record's message and arguments by `token=[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_TEXT.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_TEXT.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


REDACT_ACTION_TOKENS = RedactActionTokens()
"""One instance, so adding it to a logger twice (a second app in the process) is a no-op."""


def redact_access_logs() -> None:
    """Keep link tokens out of uvicorn's access log (and its error log, which may quote URLs)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(REDACT_ACTION_TOKENS)
