"""Signature checks over the raw request bytes, one function per scheme, all constant-time.

Each `verify_*` takes every active secret of the source (several during a rotation) and
raises `SignatureError` unless one of them produced the signature. Schemes with a timestamp
also refuse a request older (or further in the future) than `FRESHNESS`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

FRESHNESS = timedelta(minutes=5)

HUBSPOT_URI_ESCAPES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}


class SignatureError(Exception):
    """The request is not proven to come from the source: answer 401, write nothing."""


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _matches(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def check_freshness(timestamp: datetime, now: datetime) -> None:
    if abs(now - timestamp) > FRESHNESS:
        raise SignatureError("timestamp outside the 5-minute window")


def _timestamp(value: str | None, *, unit_seconds: float) -> datetime:
    if not value or not value.strip().isdigit():
        raise SignatureError("missing or malformed timestamp header")
    try:
        return datetime.fromtimestamp(int(value) * unit_seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise SignatureError("timestamp out of range") from None


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None


def hubspot_uri(url: str) -> str:
    """The URI as HubSpot signs it: the escapes of its table decoded, all others kept."""
    for escape, character in HUBSPOT_URI_ESCAPES.items():
        url = url.replace(escape, character)
    return url


def verify_hubspot_v3(
    secrets: Sequence[str], *, method: str, url: str, body: bytes,
    timestamp: str | None, signature: str | None, now: datetime,
) -> None:
    """`X-HubSpot-Signature-v3`: base64 HMAC-SHA256 of method + URI + body + timestamp (ms)."""
    if not signature:
        raise SignatureError("missing X-HubSpot-Signature-v3")
    check_freshness(_timestamp(timestamp, unit_seconds=0.001), now)
    given = _b64decode(signature)
    message = b"".join(
        (method.upper().encode(), hubspot_uri(url).encode(), body, (timestamp or "").encode())
    )
    if not any(_matches(_hmac_sha256(secret.encode(), message), given) for secret in secrets):
        raise SignatureError("signature does not match")


def verify_typeform(secrets: Sequence[str], *, body: bytes, signature: str | None) -> None:
    """`Typeform-Signature: sha256=<base64 HMAC-SHA256 of the body>` (no timestamp)."""
    if not signature or not signature.startswith("sha256="):
        raise SignatureError("missing or malformed Typeform-Signature")
    given = _b64decode(signature.removeprefix("sha256="))
    if not any(_matches(_hmac_sha256(secret.encode(), body), given) for secret in secrets):
        raise SignatureError("signature does not match")


def verify_webflow(
    secrets: Sequence[str], *, body: bytes, timestamp: str | None, signature: str | None,
    now: datetime,
) -> None:
    """`x-webflow-signature`: hex HMAC-SHA256 of `timestamp:body`, timestamp in ms."""
    if not signature:
        raise SignatureError("missing x-webflow-signature")
    check_freshness(_timestamp(timestamp, unit_seconds=0.001), now)
    try:
        given = bytes.fromhex(signature.strip())
    except ValueError:
        raise SignatureError("signature is not hex") from None
    message = (timestamp or "").encode() + b":" + body
    if not any(_matches(_hmac_sha256(secret.encode(), message), given) for secret in secrets):
        raise SignatureError("signature does not match")


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (padding optional, as in the reference)."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return secret.encode()


def verify_standard_webhooks(
    secrets: Sequence[str], *, body: bytes, message_id: str | None, timestamp: str | None,
    signature: str | None, now: datetime,
) -> None:
    """`webhook-signature: v1,<base64 HMAC of id.timestamp.body>` (space-separated list)."""
    if not message_id or not signature:
        raise SignatureError("missing webhook-id or webhook-signature")
    check_freshness(_timestamp(timestamp, unit_seconds=1), now)
    message = f"{message_id}.{timestamp}.".encode() + body
    candidates = []
    for entry in signature.split():
        version, _, value = entry.partition(",")
        if version == "v1":
            try:
                candidates.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    keys = [standard_webhooks_key(secret) for secret in secrets]
    if not any(_matches(_hmac_sha256(key, message), given) for key in keys for given in candidates):
        raise SignatureError("signature does not match")


def verify_bearer(secrets: Sequence[str], *, authorization: str | None) -> None:
    """`Authorization: Bearer <token>`, for senders that cannot sign (Zapier, scripts)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SignatureError("missing bearer token")
    given = token.strip().encode()
    if not any(_matches(secret.encode(), given) for secret in secrets):
        raise SignatureError("token does not match")
