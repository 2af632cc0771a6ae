"""Sealing personal data in events: unreadable without the lead's key, whole with it, skipped
once the key is gone; events with nothing personal and older plain events unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.events import (
    AssignmentQualified,
    AssignmentQualifiedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Attribution,
    Bant,
    LeadErased,
    LeadErasedData,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    LeadStageChanged,
    LeadStageChangedData,
    SignalRecorded,
    SignalRecordedData,
    UndecodableEventError,
    decode_event,
    encode_event,
)
from shared.lead_keys import seal_json
from shared.sealing import key_bytes, new_data_key

PERSONAL = ["ada.canary@acme.example", "Ada Canary", "+441234567890", "Canary Ltd", "CTO Canary"]


def received(lead_id: str = "lead-1") -> LeadReceived:
    return LeadReceived(producer="ingest", lead_id=lead_id, data=LeadReceivedData(
        lead=LeadProfile(email=PERSONAL[0], name=PERSONAL[1], phone=PERSONAL[2],
                         company=PERSONAL[3], job_title=PERSONAL[4], country="GB",
                         employee_count=120)))


def test_a_sealed_event_holds_no_personal_value_and_opens_whole_with_its_key() -> None:
    key = key_bytes(new_data_key())
    event = received()
    sealed = seal_json(event, key)
    assert not [value for value in PERSONAL if value in sealed]
    document = json.loads(sealed)
    assert document["schema_version"] == 2
    assert document["data"]["lead"]["country"] == "GB", "what routing needs stays readable"
    assert decode_event(sealed.encode(), keys={"lead-1": key}.get) == event


def test_without_its_key_a_sealed_event_is_skipped_not_refused() -> None:
    sealed = seal_json(received(), key_bytes(new_data_key())).encode()
    assert decode_event(sealed, keys=lambda lead_id: None) is None
    assert decode_event(sealed) is None


def test_a_key_that_does_not_open_the_event_refuses_it_rather_than_taking_it_for_erased() -> None:
    sealed = seal_json(received(), key_bytes(new_data_key())).encode()
    other_key = key_bytes(new_data_key())
    with pytest.raises(UndecodableEventError, match="cannot be opened"):
        decode_event(sealed, keys=lambda lead_id: other_key)


def test_a_key_opens_only_its_own_leads_events() -> None:
    key = key_bytes(new_data_key())
    document = json.loads(seal_json(received("lead-1"), key))
    document["lead_id"] = "lead-2"
    with pytest.raises(UndecodableEventError):
        decode_event(json.dumps(document).encode(), keys=lambda lead_id: key)


def test_a_damaged_seal_is_refused() -> None:
    key = key_bytes(new_data_key())
    document = json.loads(seal_json(received(), key))
    document["sealed"] = document["sealed"][:20]
    with pytest.raises(UndecodableEventError):
        decode_event(json.dumps(document).encode(), keys=lambda lead_id: key)


def test_an_event_published_after_its_key_went_carries_nothing_personal() -> None:
    stripped = seal_json(received(), None)
    assert not [value for value in PERSONAL if value in stripped]
    assert decode_event(stripped.encode(), keys=lambda lead_id: key_bytes(new_data_key())) is None


def test_signal_urls_and_properties_are_sealed() -> None:
    key = key_bytes(new_data_key())
    signal = SignalRecorded(producer="ingest", lead_id="lead-1", data=SignalRecordedData(
        signal_id="s-1", signal_type="page_view", signal_at=datetime(2026, 12, 1, tzinfo=UTC),
        url=f"https://example.com/?who={PERSONAL[0]}", properties={"visitor": PERSONAL[1]}))
    sealed = seal_json(signal, key)
    assert PERSONAL[0] not in sealed and PERSONAL[1] not in sealed
    assert decode_event(sealed.encode(), keys=lambda lead_id: key) == signal


def test_events_with_nothing_personal_and_plain_older_events_decode_as_before() -> None:
    erased = LeadErased(producer="ingest", lead_id="lead-1", data=LeadErasedData())
    assert seal_json(erased, None) == encode_event(erased).decode()
    assert decode_event(encode_event(erased)) == erased
    plain = received()
    assert decode_event(encode_event(plain)) == plain


def test_a_broken_event_is_refused_without_its_values_in_the_error() -> None:
    document = json.loads(encode_event(received()))
    document["data"]["lead"]["employee_count"] = PERSONAL[0]
    with pytest.raises(UndecodableEventError) as refused:
        decode_event(json.dumps(document).encode())
    assert PERSONAL[0] not in str(refused.value)
    assert "employee_count" in str(refused.value)


def test_what_sdrs_write_about_a_lead_is_sealed() -> None:
    key = key_bytes(new_data_key())
    rejected = AssignmentRejected(producer="router", lead_id="lead-1", data=AssignmentRejectedData(
        assignment_id="a-1", sdr_id="s-1", reason_code="other", note=f"call {PERSONAL[2]}"))
    qualified = AssignmentQualified(producer="router", lead_id="lead-1",
                                    data=AssignmentQualifiedData(
        assignment_id="a-1", sdr_id="s-1", qualified_at=datetime(2026, 12, 1, tzinfo=UTC),
        bant=Bant(authority=PERSONAL[1])))
    for event in (rejected, qualified):
        sealed = seal_json(event, key)
        assert PERSONAL[2] not in sealed and PERSONAL[1] not in sealed
        assert decode_event(sealed.encode(), keys=lambda lead_id: key) == event


def test_attribution_urls_and_a_stage_changes_reason_are_sealed() -> None:
    key = key_bytes(new_data_key())
    lead = received().data.lead.model_copy(update={"attribution": Attribution(
        channel="ads", referrer="https://mail.example/?to=ada.canary@acme.example",
        landing_page="https://acme.example/demo?name=Ada+Canary")})
    event = LeadReceived(producer="ingest", lead_id="lead-1", data=LeadReceivedData(lead=lead))
    sealed = seal_json(event, key)
    assert "canary" not in sealed.lower() and '"channel":"ads"' in sealed
    assert decode_event(sealed.encode(), keys={"lead-1": key}.get) == event
    assert event.data.lead.attribution is not None
    assert event.data.lead.attribution.referrer is not None, "the event itself is left whole"
    moved = LeadStageChanged(producer="crm", lead_id="lead-1", data=LeadStageChangedData(
        from_stage="sql", to_stage="opportunity", reason="Ada Canary signed the quote"))
    assert "Canary" not in seal_json(moved, key)
    assert decode_event(seal_json(moved, key).encode(), keys={"lead-1": key}.get) == moved
