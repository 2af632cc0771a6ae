"""The lead data keys and what an erasure does with them: ingest seals each lead's events with
its key and hands it out on its internal route; an erasure deletes it, redacts the person's
part of a delivery shared with others, their published events and dead letters, and leaves
nothing of them in SQLite's files."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from fastapi import FastAPI
from sqlalchemy import event, insert

from leadrelay.broker import free_port
from services.ingest import repository
from services.ingest.app import create_app
from services.ingest.models import INBOX, OUTBOX, submission
from services.ingest.service import new_lead_row
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock
from shared.consumer import EventConsumer
from shared.db import Database, new_id
from shared.lead_keys import KeyRing, KeysUnavailableError
from shared.sealing import key_bytes
from tests.ingest import signing
from tests.ingest.conftest import SECRET, table_rows
from tests.support import (
    ADMIN_HEADERS,
    ADMIN_TOKEN,
    eventually,
    ingest_keys,
    opened,
    read_topic,
    running_app,
)

pytestmark = pytest.mark.broker

ADA = {"email": "ada.canary@acme.example", "name": "Ada Canary", "phone": "+44 20 7946 0001",
       "company": "Canary Analytical Engines"}
BOB = {"email": "bob.kept@acme.example", "name": "Bob Kept", "phone": "+44 20 7946 0002",
       "company": "Kept Ltd"}


@pytest.fixture
async def ingest(settings: IngestSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with running_app(app, headers=ADMIN_HEADERS) as client:
        yield app, client


def keyring_of(app: FastAPI) -> KeyRing:
    """A key ring that asks this ingest app (in this process) for the keys."""
    return KeyRing("http://ingest.test", ADMIN_TOKEN,
                   client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))


async def post_leads(client: httpx.AsyncClient, *people: dict[str, str]) -> list[str]:
    ids = []
    for person in people:
        answer = await client.post("/v1/leads", json=person)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["lead_id"])
    return ids


async def test_a_batch_of_keys_is_one_request_and_an_erased_lead_has_none(
    ingest: tuple[FastAPI, httpx.AsyncClient], settings: IngestSettings,
) -> None:
    app, client = ingest
    ada, bob = await post_leads(client, ADA, BOB)
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
    assert ADA["email"] not in json.dumps(events)
    keys = keyring_of(app)
    await keys.prefetch([ada, bob, ada])
    assert keys.fetches == 1
    stored = await ingest_keys(settings.database_url)
    assert {keys.key_of(ada), keys.key_of(bob)} == {
        key_bytes(stored[lead]) for lead in (ada, bob)}
    assert {event["data"]["lead"]["email"] for event in opened(events, stored)} == {
        ADA["email"], BOB["email"]}

    assert (await client.delete(f"/v1/leads/{ada}")).status_code == 204
    fresh = keyring_of(app)
    await fresh.prefetch([ada, bob])
    assert fresh.key_of(ada) is None
    assert fresh.key_of(bob) == keys.key_of(bob)
    keys.forget(bob)
    assert keys.key_of(bob) is None
    with pytest.raises(KeysUnavailableError):
        keys.key_of("never-asked")
    unreachable = KeyRing("http://127.0.0.1:9", None, timeout=1.0)
    with pytest.raises(KeysUnavailableError):
        await unreachable.prefetch([bob])
    await unreachable.close()


class ByHost(httpx.AsyncBaseTransport):
    """Requests to `ingest.test` go to the app in this process, any other over the network."""

    def __init__(self, app: FastAPI) -> None:
        self.app = httpx.ASGITransport(app=app)
        self.network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.app if request.url.host == "ingest.test" else self.network
        return await transport.handle_async_request(request)


async def test_keys_come_from_the_next_ingest_instance_while_one_is_down(
    ingest: tuple[FastAPI, httpx.AsyncClient], settings: IngestSettings,
) -> None:
    app, client = ingest
    (ada,) = await post_leads(client, ADA)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a killed instance
    keys = KeyRing(f"{down}, http://ingest.test", ADMIN_TOKEN,
                   client=httpx.AsyncClient(transport=ByHost(app)))
    await keys.prefetch([ada])
    stored = await ingest_keys(settings.database_url)
    assert keys.key_of(ada) == key_bytes(stored[ada])
    assert keys.urls[0].startswith("http://ingest.test/")  # asked first from now on
    await keys.close()


async def test_a_consumer_skips_an_erased_leads_sealed_events_without_dead_letters(
    ingest: tuple[FastAPI, httpx.AsyncClient], settings: IngestSettings,
) -> None:
    app, client = ingest
    ada, bob = await post_leads(client, ADA, BOB)
    events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
    assert (await client.delete(f"/v1/leads/{ada}")).status_code == 204
    seen: list[Any] = []

    async def remember(_session: Any, event: Any) -> None:
        seen.append(event)

    keys = keyring_of(app)
    database = Database(settings.database_url)
    consumer = EventConsumer(name="sample", db=database, inbox=INBOX, consumer=None,  # type: ignore[arg-type]
                             handlers={"lead.received": remember}, keyring=keys,
                             clock=SystemClock())
    partition = TopicPartition(settings.topics.leads, 0)
    batch = {partition: [
        ConsumerRecord(topic=partition.topic, partition=0, offset=offset, timestamp=0,
                       timestamp_type=0, key=event["lead_id"].encode(),
                       value=json.dumps(event).encode(), checksum=None, serialized_key_size=1,
                       serialized_value_size=1, headers=[("event_type", b"lead.received")])
        for offset, event in enumerate(events)
    ]}
    try:
        await keys.prefetch(event["lead_id"] for event in events)
        await consumer.apply(batch)
    finally:
        await database.dispose()
    assert [(event.lead_id, event.data.lead.email) for event in seen] == [(bob, BOB["email"])]
    assert consumer.dead_lettered == 0


async def hubspot_delivery(client: httpx.AsyncClient, *people: dict[str, str]) -> list[str]:
    body = json.dumps([
        {"eventId": number, "subscriptionId": 1, "portalId": 2, "properties": person}
        for number, person in enumerate(people)
    ]).encode()
    url = "http://testserver/v1/webhooks/hubspot"
    stamp = int(time.time() * 1000)
    answer = await client.post("/v1/webhooks/hubspot", content=body, headers={
        "content-type": "application/json", "x-hubspot-request-timestamp": str(stamp),
        "x-hubspot-signature-v3": signing.hubspot_v3(SECRET, "POST", url, body, stamp)})
    assert answer.status_code == 202, answer.text
    return [result["lead_id"] for result in answer.json()["results"]]


async def test_erasing_one_person_of_a_shared_delivery_leaves_the_others_part(
    ingest: tuple[FastAPI, httpx.AsyncClient], settings: IngestSettings,
) -> None:
    _, client = ingest
    ada, bob = await hubspot_delivery(client, ADA, BOB)
    await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)

    async def published_of_ada() -> list[dict[str, Any]]:
        return [row for row in await table_rows(settings, OUTBOX.events)
                if row["message_key"] == ada and row["published_at"] is not None]

    await eventually(published_of_ada)
    database = Database(settings.database_url)
    try:
        async with database.transaction() as session:
            await session.execute(insert(INBOX.failed).values(
                consumer="sample", topic="t", partition=0, offset=1, message_key=ada,
                payload=json.dumps(ADA), error="kept whole", failed_at=SystemClock().now()))
    finally:
        await database.dispose()

    assert (await client.delete(f"/v1/leads/{ada}")).status_code == 204
    rows = await table_rows(settings, submission)
    assert [row["lead_id"] for row in rows] == [bob]
    assert json.loads(rows[0]["raw"]) == [
        {"erased": True},
        {"eventId": 1, "subscriptionId": 1, "portalId": 2, "properties": BOB},
    ]
    assert [row["event_type"] for row in await table_rows(settings, OUTBOX.events)
            if row["message_key"] == ada] == ["lead.erased"]
    assert await table_rows(settings, INBOX.failed) == []
    assert (await client.get(f"/v1/leads/{bob}")).json()["name"] == BOB["name"]


async def test_no_sqlite_file_holds_an_erased_person_once_committed(
    ingest: tuple[FastAPI, httpx.AsyncClient], settings: IngestSettings,
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's files")
    _, client = ingest
    [ada] = await post_leads(client, ADA)
    await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    database_file = Path(settings.database_url.split("///", 1)[1])
    files = [database_file, database_file.with_name(database_file.name + "-wal")]
    needle = ADA["email"].encode()
    assert any(needle in path.read_bytes() for path in files if path.exists())

    assert (await client.delete(f"/v1/leads/{ada}")).status_code == 204

    async def holding() -> list[str]:
        return [path.name for path in files if path.exists() and needle in path.read_bytes()]

    assert await eventually(holding, until=lambda found: not found, timeout=10) == []


async def test_the_keys_of_leads_a_transaction_inserted_are_known_without_a_query(
    settings: IngestSettings,
) -> None:
    """Sealing a new lead's `lead.received` reads its key from what the transaction wrote."""
    db = Database(settings.database_url)
    statements: list[str] = []

    def record(*arguments: Any) -> None:
        statements.append(str(arguments[2]))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    row = new_lead_row(new_id(), {"email": "new.key@acme.example"}, datetime.now(UTC))
    try:
        async with db.transaction() as session:
            await repository.insert_lead(session, row)
            statements.clear()
            assert await repository.data_keys(session, [row["id"]]) == {
                row["id"]: row["data_key"]}
            assert statements == []
        async with db.reading() as session:
            assert await repository.data_keys(session, [row["id"], "no-such-lead"]) == {
                row["id"]: row["data_key"]}
    finally:
        await db.dispose()
