"""Signals: recorded once, published as signal.recorded, an unknown email creates the lead."""

from __future__ import annotations

import pytest

from services.ingest.app import create_app
from services.ingest.models import lead
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
        events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 4)
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
