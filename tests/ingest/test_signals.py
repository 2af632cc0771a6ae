"""Signals: recorded once, published as signal.recorded, an unknown email creates the lead."""

from __future__ import annotations

import pytest

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, ingest_keys, opened, read_topic, running_app

pytestmark = pytest.mark.broker

AT = "2026-01-05T09:00:00Z"


async def test_signal_for_unknown_email_creates_lead_and_replay_counts_once(
    settings: IngestSettings,
) -> None:
    signal = {"email": "Reader@Acme.io", "type": "content_download", "occurred_at": AT,
              "url": "https://acme.io/whitepaper", "properties": {"asset": "wp-1"}}
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/signals", json=signal)
        again = await client.post("/v1/signals", json=signal)
        by_id = await client.post("/v1/signals", json={
            "lead_id": first.json()["lead_id"], "type": "custom:trade_show", "signal_id": "s-1",
            "occurred_at": AT})
        batch = await client.post("/v1/signals/batch", json={"signals": [
            {"email": "reader@acme.io", "type": "pricing_page_view", "occurred_at": AT},
            {"lead_id": first.json()["lead_id"], "type": "custom:trade_show", "signal_id": "s-1"},
        ]})
        events = [
            *await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1),
            *await read_topic(settings.kafka_bootstrap_servers, settings.topics.signals, 3)]
    assert all("wp-1" not in str(event) for event in events), "the log holds properties readable"
    events = opened(events, await ingest_keys(settings.database_url))
    assert first.status_code == 202, first.text
    assert first.json()["lead_created"] is True and first.json()["status"] == "recorded"
    assert again.json() == {**first.json(), "status": "duplicate", "lead_created": False}
    assert by_id.json()["signal_id"] == "s-1"
    assert [result["status"] for result in batch.json()["results"]] == ["recorded", "duplicate"]
    assert [row["email"] for row in await table_rows(settings, lead)] == ["reader@acme.io"]
    types = [event["type"] for event in events]
    assert types.count("lead.received") == 1 and types.count("signal.recorded") == 3
    download = next(e for e in events if e["type"] == "signal.recorded"
                    and e["data"]["signal_type"] == "content_download")
    assert download["data"]["signal_id"] == first.json()["signal_id"]
    assert download["data"]["properties"] == {"asset": "wp-1"}


async def test_signal_refusals(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        unknown_lead = await client.post("/v1/signals", json={"lead_id": "nope",
                                                               "type": "email_open"})
        no_lead = await client.post("/v1/signals", json={"type": "email_open"})
        bad_type = await client.post("/v1/signals", json={"email": "a@b.io", "type": "weird"})
    assert unknown_lead.status_code == 404
    assert no_lead.status_code == 422 and bad_type.status_code == 422


async def test_a_blank_lead_id_or_email_is_an_absent_one(settings: IngestSettings) -> None:
    """Found by Schemathesis: `"lead_id": ""` with an email was a 500 in a batch."""
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        batch = await client.post("/v1/signals/batch", json={"signals": [
            {"email": "ada@example.com", "lead_id": "", "type": "pricing_page_view",
             "occurred_at": AT},
            {"email": "ada@example.com", "lead_id": "  ", "type": "email_open",
             "occurred_at": AT}]})
        alone = await client.post("/v1/signals", json={
            "email": "ada@example.com", "lead_id": "", "type": "email_click", "occurred_at": AT})
        by_blank_email = await client.post("/v1/signals", json={
            "lead_id": alone.json()["lead_id"], "email": " ", "type": "email_open"})
        nothing = await client.post("/v1/signals/batch", json={"signals": [
            {"lead_id": "", "email": "", "type": "email_open"}]})
    assert batch.status_code == 202, batch.text
    leads = {result["lead_id"] for result in batch.json()["results"]}
    assert leads == {alone.json()["lead_id"]} and alone.status_code == 202
    assert by_blank_email.status_code == 202, by_blank_email.text
    assert nothing.status_code == 422, nothing.text


async def test_a_batch_goes_out_in_two_lanes_once_however_often_it_is_sent(
    settings: IngestSettings,
) -> None:
    """Buying signals go with new leads, the rest to the signals topic; unknown emails each
    make one lead however many signals name them; a batch sent again records nothing."""
    batch = {"signals": [
        {"email": "new@acme.io", "type": "email_open", "signal_id": "o-1", "occurred_at": AT},
        {"email": "New@Acme.io", "type": "demo_request", "signal_id": "d-1", "occurred_at": AT},
        {"email": "other@acme.io", "type": "email_click", "occurred_at": AT},
        {"email": "new@acme.io", "type": "email_open", "signal_id": "o-1", "occurred_at": AT},
    ]}
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/signals/batch", json=batch)
        again = await client.post("/v1/signals/batch", json=batch)
        known = await client.post("/v1/signals/batch", json={"signals": [
            {"email": "new@acme.io", "type": "page_view", "signal_id": "p-1"}]})
        fast = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 3)
        bulk = await read_topic(settings.kafka_bootstrap_servers, settings.topics.signals, 3)
    assert first.status_code == 202, first.text
    assert [r["status"] for r in first.json()["results"]] == [
        "recorded", "recorded", "recorded", "duplicate"]
    assert [r["lead_created"] for r in first.json()["results"]] == [True, False, True, False]
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 4
    assert [r["status"] for r in known.json()["results"]] == ["recorded"]
    fast = opened(fast, await ingest_keys(settings.database_url))
    bulk = opened(bulk, await ingest_keys(settings.database_url))
    assert sorted(event["type"] for event in fast) == [
        "lead.received", "lead.received", "signal.recorded"]
    assert [e["data"]["signal_type"] for e in fast if e["type"] == "signal.recorded"] == [
        "demo_request"]
    assert sorted(event["data"]["signal_type"] for event in bulk) == [
        "email_click", "email_open", "page_view"]
    leads = await table_rows(settings, lead)
    assert sorted(row["email"] for row in leads) == ["new@acme.io", "other@acme.io"]
    # A signal of a known lead is no submission of it: only the two creations are.
    assert len(await table_rows(settings, submission)) == 2
