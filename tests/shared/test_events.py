"""Event contracts: round trips, unknown types and newer versions skipped, broken contracts kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.events import (
    EVENT_CLASSES,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    UndecodableEventError,
    decode_event,
    encode_event,
)


def lead_received() -> LeadReceived:
    return LeadReceived(
        producer="ingest",
        lead_id="lead-1",
        correlation_id="req-9",
        occurred_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        data=LeadReceivedData(lead=LeadProfile(email="ada@example.com", demo_requested=True)),
    )


def test_an_event_survives_encoding() -> None:
    event = lead_received()
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert isinstance(decoded, LeadReceived)


def test_every_event_class_has_its_type_in_the_union() -> None:
    assert set(EVENT_CLASSES) >= {"lead.received", "lead.scored", "assignment.escalated"}
    for name, cls in EVENT_CLASSES.items():
        assert cls.model_fields["type"].default == name


def test_unknown_type_is_skipped() -> None:
    raw = json.loads(encode_event(lead_received()))
    raw["type"] = "lead.teleported"
    assert decode_event(json.dumps(raw).encode()) is None


def test_newer_schema_version_is_skipped() -> None:
    raw = json.loads(encode_event(lead_received()))
    raw["schema_version"] = 2
    assert decode_event(json.dumps(raw).encode()) is None


def test_fields_added_by_a_newer_producer_are_ignored() -> None:
    raw = json.loads(encode_event(lead_received()))
    raw["data"]["lead"]["favourite_colour"] = "teal"
    raw["trace"] = {"span": 1}
    decoded = decode_event(json.dumps(raw).encode())
    assert isinstance(decoded, LeadReceived)
    assert decoded.data.lead.email == "ada@example.com"


def test_a_type_the_consumer_does_not_want_is_skipped_unvalidated() -> None:
    broken = b'{"type": "lead.received"}'
    assert decode_event(broken, wanted={"lead.scored"}) is None
    assert isinstance(decode_event(encode_event(lead_received()), {"lead.received"}), LeadReceived)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"type": "lead.received"}'])
def test_a_broken_known_event_raises(payload: bytes) -> None:
    with pytest.raises(UndecodableEventError):
        decode_event(payload)
