"""Signature checks against the vendors' official vectors, and the ways a request can fail."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.signatures import (
    SignatureError,
    hubspot_uri,
    verify_bearer,
    verify_hubspot_v3,
    verify_standard_webhooks,
    verify_typeform,
    verify_webflow,
)
from tests.ingest import signing
from tests.ingest.conftest import fixture_bytes

HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HUBSPOT_URI = "https://www.example.com/webhook_uri"
HUBSPOT_BODY = b"{'example_field':'example_value'}"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1693657560000, "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="),
        (1700000300000, "RnbPH7+UMKVkbV32P8bz450N4M56aPmcru1+D3kSDtw="),
        (15000000, "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="),
    ],
)
def test_hubspot_v3_official_vectors(timestamp: int, expected: str) -> None:
    now = datetime.fromtimestamp(timestamp / 1000, tz=UTC)
    verify_hubspot_v3(
        [HUBSPOT_SECRET], method="POST", url=HUBSPOT_URI, body=HUBSPOT_BODY,
        timestamp=str(timestamp), signature=expected, now=now,
    )
    with pytest.raises(SignatureError):
        verify_hubspot_v3(
            [HUBSPOT_SECRET], method="POST", url=HUBSPOT_URI, body=HUBSPOT_BODY + b" ",
            timestamp=str(timestamp), signature=expected, now=now,
        )


def test_hubspot_uri_decodes_only_its_table() -> None:
    assert hubspot_uri("https://x.io/hook%3Fa%3Ab%40c%20d%2B") == "https://x.io/hook?a:b@c%20d%2B"


@pytest.mark.parametrize(
    ("secret", "message_id", "timestamp", "body", "signature"),
    [
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
         fixture_bytes("standardwebhooks/vector-crosslang-body.json"),
         "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
         fixture_bytes("standardwebhooks/vector-rust-body.json"),
         "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
    ],
)
def test_standard_webhooks_official_vectors(
    secret: str, message_id: str, timestamp: int, body: bytes, signature: str
) -> None:
    now = datetime.fromtimestamp(timestamp, tz=UTC)
    skipped = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,ignored"
    verify_standard_webhooks(
        [secret], body=body, message_id=message_id, timestamp=str(timestamp),
        signature=f"{skipped} {signature}", now=now,
    )
    wrong_last_char = signature[:-2] + ("A=" if signature[-2] != "A" else "B=")
    with pytest.raises(SignatureError):
        verify_standard_webhooks(
            [secret], body=body, message_id=message_id, timestamp=str(timestamp),
            signature=wrong_last_char, now=now,
        )


def test_typeform_format_matches_rfc4231_case_2() -> None:
    """HMAC-SHA256(key "Jefe", "what do ya want for nothing?"), base64 with the sha256= prefix."""
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    signature = "sha256=" + base64.b64encode(bytes.fromhex(expected)).decode()
    verify_typeform(["Jefe"], body=b"what do ya want for nothing?", signature=signature)
    with pytest.raises(SignatureError):
        verify_typeform(["Jefe"], body=b"what do ya want for nothing!", signature=signature)


BODY = fixture_bytes("webflow/example.json")


def webflow_check(secrets: list[str], body: bytes, signed_at: datetime, now: datetime,
                  signed_with: str = "s3cret-webflow", signed_body: bytes | None = None) -> None:
    timestamp = at_ms(signed_at)
    verify_webflow(
        secrets, body=body, timestamp=str(timestamp),
        signature=signing.webflow(signed_with, signed_body or body, timestamp), now=now,
    )


def test_webflow_valid_tampered_wrong_secret_rotated() -> None:
    webflow_check(["s3cret-webflow"], BODY, NOW, NOW)
    webflow_check(["new-secret", "s3cret-webflow"], BODY, NOW, NOW)
    with pytest.raises(SignatureError):
        webflow_check(["s3cret-webflow"], BODY.replace(b"Zaphod", b"Arthur"), NOW, NOW,
                      signed_body=BODY)
    with pytest.raises(SignatureError):
        webflow_check(["another-secret"], BODY, NOW, NOW)


@pytest.mark.parametrize(("age", "accepted"), [(299, True), (301, False), (-301, False)])
def test_freshness_window_of_every_timestamped_scheme(age: int, accepted: bool) -> None:
    signed_at = NOW - timedelta(seconds=age)
    checks = [
        lambda: webflow_check(["s3cret-webflow"], BODY, signed_at, NOW),
        lambda: verify_hubspot_v3(
            [HUBSPOT_SECRET], method="POST", url=HUBSPOT_URI, body=BODY,
            timestamp=str(at_ms(signed_at)), now=NOW,
            signature=signing.hubspot_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URI, BODY,
                                         at_ms(signed_at)),
        ),
        lambda: verify_standard_webhooks(
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], body=BODY, message_id="msg_1",
            timestamp=str(int(signed_at.timestamp())), now=NOW,
            signature=signing.standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1",
                                       int(signed_at.timestamp()), BODY),
        ),
    ]
    for check in checks:
        if accepted:
            check()
        else:
            with pytest.raises(SignatureError, match="window"):
                check()


def test_reserialised_json_is_rejected() -> None:
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reserialised != BODY
    with pytest.raises(SignatureError):
        webflow_check(["s3cret-webflow"], reserialised, NOW, NOW, signed_body=BODY)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer wrong-token"])
def test_bearer_token_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_bearer(["right-token-123"], authorization=header)
    verify_bearer(["old-token-1234", "right-token-123"], authorization="Bearer right-token-123")


@pytest.mark.parametrize("signature", [None, "", "sha256=", "sha256=!!!", "md5=abc"])
def test_malformed_signatures_are_refused_not_crashed(signature: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_typeform(["secret"], body=b"{}", signature=signature)
