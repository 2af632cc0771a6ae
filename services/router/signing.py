"""Standard Webhooks signatures (https://www.standardwebhooks.com), scheme `v1`.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is the base64
HMAC-SHA256 of it under the secret's key (`whsec_` + base64). A retry keeps its `webhook-id`
and gets a fresh timestamp and signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (`v1,<base64>`)."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, message_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any `v1` signature in the space-separated `header` matches."""
    expected = sign(secret, message_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, entry.encode())
        for entry in header.split()
        if entry.startswith("v1,")
    )


def headers(secret: str | None, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (without a signature when there is no secret)."""
    values = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if secret:
        values["webhook-signature"] = sign(secret, message_id, timestamp, body)
    return values
