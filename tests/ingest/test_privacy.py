"""Erasure, and canary values that must never reach logs, Kafka keys or headers."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, read_topic, running_app

pytestmark = pytest.mark.broker


async def test_erasure_by_id_and_by_email(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = (await client.post("/v1/leads", json={"email": "gone@acme.io"})).json()
        await client.post("/v1/leads", json={"email": "also.gone@acme.io"})
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
        by_id = await client.delete(f"/v1/leads/{first['lead_id']}")
        by_email = await client.post("/v1/erasures", json={"email": "Also.Gone@acme.io"})
        missing = await client.delete(f"/v1/leads/{first['lead_id']}")
        events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 4)
    assert by_id.status_code == 204 and by_email.status_code == 202
    assert missing.status_code == 404
    assert await table_rows(settings, lead) == []
    assert await table_rows(settings, submission) == []
    erased = [event["lead_id"] for event in events if event["type"] == "lead.erased"]
    assert erased == [first["lead_id"], by_email.json()["lead_id"]]


async def test_canaries_never_reach_logs_keys_or_headers(
    settings: IngestSettings, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:10]
    canaries = [f"canary.{tag}@canary-{tag}.io", f"Canary{tag}", "+33 6 12 34 56 78"]
    caplog.set_level(logging.INFO)  # production's level; SQLAlchemy's DEBUG shows parameters
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        await client.post("/v1/leads", json={"email": canaries[0], "name": canaries[1],
                                             "phone": canaries[2]})
        await client.post("/v1/leads", json={"email": canaries[0], "name": canaries[1] + "x"})
        await client.post("/v1/leads", json={"email": "not-valid " + canaries[1]})
        await client.post("/v1/signals", json={"email": canaries[0], "type": "email_open"})
        await client.post("/v1/erasures", json={"email": canaries[0]})
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 3)
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.signals, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([TopicPartition(topic, p)
                         for topic in (settings.topics.leads, settings.topics.signals)
                         for p in consumer.partitions_for_topic(topic) or set()])
        await consumer.seek_to_beginning()
        records = [r for batch in (await consumer.getmany(timeout_ms=2000)).values() for r in batch]
    finally:
        await consumer.stop()
    assert len(records) >= 4
    wire = b" ".join(
        b" ".join([record.key or b"", *(name.encode() + value for name, value in record.headers)])
        for record in records
    )
    for canary in [*canaries, "+33612345678", canaries[0].lower()]:
        assert canary not in caplog.text
        assert canary.encode() not in wire
