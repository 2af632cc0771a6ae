"""Independent signers for the tests, written from each vendor's documentation.

They share no code with `services.ingest.signatures` on purpose: a bug there must not be
mirrored here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    message = method.encode() + uri.encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def typeform(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def webflow(secret: str, body: bytes, timestamp_ms: int) -> str:
    message = f"{timestamp_ms}:".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def standard(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    encoded = secret.removeprefix("whsec_")
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    content = f"{message_id}.{timestamp_s}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
