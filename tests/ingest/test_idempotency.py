"""Batch submissions and Idempotency-Key (Stripe's semantics) on the JSON API."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, read_topic, running_app

pytestmark = pytest.mark.broker


async def test_same_key_same_body_replays_and_other_body_is_422(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/leads", json={"email": "idem@acme.io", "name": "A"},
                                  headers={"Idempotency-Key": "k1"})
        replay = await client.post("/v1/leads", content=b'{"name": "A",  "email": "idem@acme.io"}',
                                   headers={"Idempotency-Key": "k1",
                                            "content-type": "application/json"})
        other = await client.post("/v1/leads", json={"email": "idem@acme.io", "name": "B"},
                                  headers={"Idempotency-Key": "k1"})
        other_scope = await client.post("/v1/leads", json={"email": "idem@acme.io", "name": "B"},
                                        headers={"Idempotency-Key": "k1", "X-Source-Key": "crm"})
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
    assert first.status_code == replay.status_code == 202
    assert replay.json() == first.json() == {"lead_id": first.json()["lead_id"],
                                             "status": "created"}
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other_scope.json()["status"] == "merged"
    assert len(await table_rows(settings, submission)) == 2


async def test_concurrent_same_key_is_stored_once(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answers = await asyncio.gather(*[
            client.post("/v1/leads", json={"email": "race@acme.io"},
                        headers={"Idempotency-Key": "race"})
            for _ in range(8)
        ])
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    codes = sorted(answer.status_code for answer in answers)
    assert set(codes) <= {202, 409} and 202 in codes
    assert {answer.json()["lead_id"] for answer in answers if answer.status_code == 202} == {
        answers[[a.status_code for a in answers].index(202)].json()["lead_id"]
    }
    assert len(await table_rows(settings, submission)) == 1


async def test_batch_gives_per_item_results(settings: IngestSettings) -> None:
    leads = [{"email": "one@acme.io"}, {"email": "nope", "country": "Atlantis"},
             {"email": "ONE@acme.io", "name": "One"}]
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answer = await client.post("/v1/leads/batch", json={"leads": leads},
                                   headers={"Idempotency-Key": "b1"})
        again = await client.post("/v1/leads/batch", json={"leads": leads},
                                  headers={"Idempotency-Key": "b1"})
        too_many = await client.post("/v1/leads/batch",
                                     json={"leads": [{"email": "x@y.io"}] * 501})
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
    assert answer.status_code == 202, answer.text
    results = answer.json()["results"]
    assert [result["status"] for result in results] == ["created", "invalid", "merged"]
    assert {error["field"] for error in results[1]["errors"]} == {"email", "country"}
    assert again.json() == answer.json()
    assert too_many.status_code == 422
    assert len(await table_rows(settings, lead)) == 1
    assert len(await table_rows(settings, submission)) == 2


async def test_batch_items_with_a_known_external_id_are_duplicates(
    settings: IngestSettings,
) -> None:
    leads = [{"email": "ext1@acme.io", "external_id": "row-1"},
             {"email": "ext2@acme.io", "external_id": "row-2", "name": "Two"},
             {"email": "ext3@acme.io", "external_id": 3}]
    crm = {"X-Source-Key": "crm"}
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/leads/batch", headers=crm, json={"leads": [
            *leads, {"email": "other@acme.io", "external_id": "row-1"}]})
        racing = await asyncio.gather(*[
            client.post("/v1/leads/batch", json={"leads": leads[:2]}, headers=crm)
            for _ in range(4)
        ])
        other_source = await client.post("/v1/leads/batch", json={"leads": leads[:1]})
        changed = await client.post("/v1/leads/batch", headers=crm, json={"leads": [
            {"email": "ext2@acme.io", "external_id": "row-2b", "name": "Deux"}]})
        events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 3)
    assert first.status_code == 202, first.text
    assert [item["status"] for item in first.json()["results"]] == [
        "created", "created", "invalid", "duplicate"]
    assert first.json()["results"][2]["errors"][0]["field"] == "external_id"
    for answer in racing:
        assert answer.status_code == 202, answer.text
        assert [item["status"] for item in answer.json()["results"]] == ["duplicate"] * 2
    assert other_source.json()["results"][0]["status"] == "unchanged"
    assert changed.json()["results"][0]["status"] == "merged"
    assert [event["type"] for event in events] == ["lead.received"] * 2 + ["lead.updated"]
    rows = await table_rows(settings, submission)
    assert sorted((row["source_key"], row["external_id"]) for row in rows) == [
        ("api", "row-1"), ("crm", "row-1"), ("crm", "row-2"), ("crm", "row-2b")]
