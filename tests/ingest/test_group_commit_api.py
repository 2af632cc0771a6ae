"""Group commit seen from HTTP: concurrent posts land once each, a dead database is a 503."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from leadrelay.broker import EmbeddedBroker, free_port
from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, read_topic, running_app

pytestmark = pytest.mark.broker


async def test_concurrent_posts_of_same_and_other_emails_land_once_each(
    settings: IngestSettings,
) -> None:
    emails = [f"crowd{number}@acme.io" for number in range(10)]
    fields = ["name", "company", "job_title", "industry"]
    app = create_app(settings)
    async with running_app(app, headers=ADMIN_HEADERS) as client:
        posts = [
            client.post("/v1/leads", json={"email": email, field: f"{field} of {email}"},
                        headers={"Idempotency-Key": f"{email}-{field}"} if index % 2 else {})
            for index, (field, email) in enumerate(
                (field, email) for field in fields for email in emails)
        ]
        batch = client.post("/v1/leads/batch", json={"leads": [
            {"email": emails[0], "country": "FR"}, {"email": "nope"},
            {"email": "batch@acme.io"}]})
        signal = client.post("/v1/signals", json={"email": emails[1], "type": "email_open",
                                                  "signal_id": "crowd-signal"})
        answers = await asyncio.gather(*posts, batch, signal)
        # Every submission but the batch's unchanged ones changes its lead: one event each.
        events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads,
                                  len(emails) * len(fields) + 2)
        events += await read_topic(settings.kafka_bootstrap_servers, settings.topics.signals, 1)
        writes = app.state.ingest.writes
    assert all(answer.status_code == 202 for answer in answers), [
        answer.text for answer in answers if answer.status_code != 202]
    assert writes.largest_group > 1
    stored = {row["email"]: row for row in await table_rows(settings, lead)}
    assert sorted(stored) == sorted([*emails, "batch@acme.io"])
    for email in emails:
        row = stored[email]
        assert [row[field] for field in fields] == [f"{field} of {email}" for field in fields]
    assert stored[emails[0]]["country"] == "FR"
    statuses = Counter(answer.json()["status"] for answer in answers[:len(posts)])
    statuses.update(item["status"] for item in answers[-2].json()["results"])
    statuses.update(["created"] if answers[-1].json()["lead_created"] else [])
    # The batch or the signal may come first for its email: creations are counted across all.
    assert statuses["created"] == len(emails) + 1
    assert statuses["invalid"] == 1
    # A signal is a submission only when it creates its lead.
    assert len(await table_rows(settings, submission)) == len(posts) + 2 + (
        1 if answers[-1].json()["lead_created"] else 0)
    received = Counter(event["lead_id"] for event in events if event["type"] == "lead.received")
    assert sorted(received.values()) == [1] * (len(emails) + 1)
    assert [event["type"] for event in events].count("signal.recorded") == 1


async def test_database_down_under_concurrency_is_503_for_every_request(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    closed = free_port()
    settings = IngestSettings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/nowhere",
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_prefix=topic_prefix,
        admin_token=ADMIN_TOKEN,
    )
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answers = await asyncio.gather(*[
            client.post("/v1/leads", json={"email": f"down{number}@acme.io"},
                        headers={"Idempotency-Key": f"k{number}"} if number % 3 == 0 else {})
            for number in range(12)
        ], client.post("/v1/leads/batch", json={"leads": [{"email": "b@acme.io"}]}),
            client.post("/v1/signals", json={"email": "s@acme.io", "type": "email_open"}))
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        assert answer.headers["content-type"] == "application/problem+json"
