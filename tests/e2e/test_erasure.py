"""The erasure canary: a person's unique values go in through every channel, then the person
is erased, and within 60 s no database file (WAL included), log line, dead letter or broker
record read from offset 0 holds any of them readable; the other person of a shared webhook
delivery keeps their data, and the erased lead's assignment is closed for good."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from leadrelay.broker import EmbeddedBroker
from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from tests.e2e.test_flow import add_sdrs, assignments, notifications
from tests.ingest import signing
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

HUBSPOT_SECRET = "hubspot-canary-secret-0123456789"
TOPIC_PREFIX = f"erasure{uuid.uuid4().hex[:6]}"
ERASURE_DEADLINE = 60.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-erasure")


@pytest.fixture(scope="module")
def system(broker: EmbeddedBroker, data_dir: Path,
           receiver: WebhookReceiver) -> Iterator[RunningSystem]:
    with running_system(bootstrap_servers=broker.bootstrap_servers, data_dir=data_dir,
                        topic_prefix=TOPIC_PREFIX, sla_seconds=300.0,
                        allowed_webhook_urls=[receiver.base_url]) as running:
        yield running


def person(tag: str) -> dict[str, str]:
    """Values found nowhere else: the phone as sent and as stored (E.164) are both looked for."""
    digits = f"{uuid.uuid4().int % 10_000:04d}"
    return {
        "email": f"{tag}.{uuid.uuid4().hex[:12]}@canary-corp.example",
        "name": f"{tag.title()} {uuid.uuid4().hex[:10]}",
        "phone": f"+1 415 555 {digits}",
        "phone_e164": f"+1415555{digits}",
        "company": f"{tag.title()}co {uuid.uuid4().hex[:10]}",
        "job_title": f"Head of {uuid.uuid4().hex[:10]}",
    }


def submitted(values: dict[str, str]) -> dict[str, Any]:
    return {name: values[name] for name in ("email", "name", "phone", "company", "job_title")}


async def post_hubspot(client: httpx.AsyncClient, system: RunningSystem,
                       contacts: list[dict[str, Any]]) -> httpx.Response:
    """One signed HubSpot delivery carrying several contacts."""
    source = await client.put(
        f"{system.url('ingest')}/v1/sources/hubspot-canary", headers=system.admin_headers,
        json={"kind": "hubspot", "secrets": [HUBSPOT_SECRET]})
    assert source.status_code in {200, 201}, source.text
    body = json.dumps([
        {"eventId": 900 + number, "subscriptionId": 7, "portalId": 62515,
         "subscriptionType": "contact.creation", "properties": contact}
        for number, contact in enumerate(contacts)
    ]).encode()
    url = f"{system.url('ingest')}/v1/webhooks/hubspot-canary"
    stamp = int(time.time() * 1000)
    return await client.post(url, content=body, headers={
        "content-type": "application/json",
        "x-hubspot-request-timestamp": str(stamp),
        "x-hubspot-signature-v3": signing.hubspot_v3(HUBSPOT_SECRET, "POST", url, body, stamp),
    })


def files_holding(data_dir: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    """Every database file (with its -wal and -shm) and log file holding one of `needles`."""
    found: dict[str, list[bytes]] = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file() or not (".db" in path.name or path.suffix == ".log"):
            continue
        content = path.read_bytes()
        hits = [needle for needle in needles if needle in content]
        if hits:
            found[str(path.relative_to(data_dir))] = hits
    return found


def submission_bodies(database: Path, lead_id: str) -> list[str]:
    """The raw bodies ingest keeps of the lead's submissions."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as reader:
        rows = reader.execute(
            "SELECT raw FROM ingest_submission WHERE lead_id = ?", (lead_id,)).fetchall()
    return [raw for (raw,) in rows]


async def broker_records_holding(
    bootstrap_servers: str, topics: tuple[str, ...], needles: list[bytes]
) -> list[tuple[str, int, bytes]]:
    """Records of `topics`, read from offset 0, holding one of `needles` in their key,
    value or headers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    hits: list[tuple[str, int, bytes]] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, number) for topic in topics
                      for number in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 20

        async def behind() -> bool:
            for partition, end in ends.items():
                if await consumer.position(partition) < end:
                    return True
            return False

        while time.monotonic() < deadline and await behind():
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    raw = (message.key or b"") + (message.value or b"") + b"".join(
                        bytes(value) for _, value in message.headers or ())
                    hits.extend((message.topic, message.offset, needle)
                                for needle in needles if needle in raw)
    finally:
        await consumer.stop()
    return hits


async def test_nothing_of_an_erased_person_is_left_anywhere(
    system: RunningSystem, receiver: WebhookReceiver, broker: EmbeddedBroker, data_dir: Path,
) -> None:
    canary, other = person("canary"), person("other")
    ingest = system.url("ingest")
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        await add_sdrs(client, system, receiver, 2)
        created = await client.post(f"{ingest}/v1/leads",
                                    json={**submitted(canary), "demo_requested": True})
        assert created.status_code == 202, created.text
        lead_id = created.json()["lead_id"]
        delivery = await post_hubspot(client, system, [
            {**submitted(other), "demo_requested": "true"},
            {**submitted(canary), "city": "Lisbon"},
        ])
        assert delivery.status_code == 202, delivery.text
        statuses = {result["status"] for result in delivery.json()["results"]}
        assert statuses <= {"created", "merged", "unchanged"}, delivery.text
        other_id = next(result["lead_id"] for result in delivery.json()["results"]
                        if result["status"] == "created")
        signal = await client.post(f"{ingest}/v1/signals", json={
            "email": canary["email"], "type": "page_view",
            "url": f"https://www.example.com/pricing?who={canary['email']}",
            "properties": {"visitor": canary["name"]}})
        assert signal.status_code == 202, signal.text
        (_, offer), = await notifications(receiver, lead_id, 1)
        await notifications(receiver, other_id, 1)
        assert offer["lead"]["email"] == canary["email"], "the SDR was told who to call"
        [first] = await assignments(client, system, lead_id)
        turned_down = await client.post(
            f"{system.url('router')}/v1/assignments/{first['id']}/reject",
            headers=system.admin_headers,
            json={"reason_code": "other", "note": f"{canary['name']} asked for a call back"})
        assert turned_down.status_code == 200, turned_down.text
        await notifications(receiver, lead_id, 2)
        needles = [canary[name].encode() for name in
                   ("email", "name", "phone", "phone_e164", "company", "job_title")]
        before = files_holding(data_dir, needles)
        assert before, "the canary never reached a database file: the test would prove nothing"

        erased = await client.delete(f"{ingest}/v1/leads/{lead_id}",
                                     headers=system.admin_headers)
        assert erased.status_code == 204, erased.text
        started = time.monotonic()

        async def traces() -> dict[str, Any]:
            records = await broker_records_holding(
                broker.bootstrap_servers, tuple(
                    f"{TOPIC_PREFIX}.{name}" for name in ("leads", "scores", "assignments")),
                needles)
            return {"files": files_holding(data_dir, needles), "broker": records}

        left = await eventually(traces, until=lambda found: not any(found.values()),
                                timeout=ERASURE_DEADLINE, interval=1.0)
        assert time.monotonic() - started < ERASURE_DEADLINE
        assert left == {"files": {}, "broker": []}

        listed = {item["status"]: item for item in await assignments(client, system, lead_id)}
        assert sorted(listed) == ["erased", "rejected"]
        closed = listed["erased"]
        rejected = await client.post(
            f"{system.url('router')}/v1/assignments/{closed['id']}/reject",
            headers=system.admin_headers, json={"reason_code": "other"})
        assert rejected.status_code == 409, rejected.text
        assert sorted(item["status"] for item in await assignments(client, system, lead_id)) == [
            "erased", "rejected"]
        assert len(receiver.for_lead(lead_id)) == 2, "the erased lead was offered again"

        kept = (await client.get(f"{ingest}/v1/leads/{other_id}")).json()
        assert (kept["name"], kept["email"], kept["company"]) == (
            other["name"], other["email"], other["company"])
        [raw] = submission_bodies(data_dir / "ingest.db", other_id)
        assert json.loads(raw) == [
            {"eventId": 900, "subscriptionId": 7, "portalId": 62515,
             "subscriptionType": "contact.creation",
             "properties": {**submitted(other), "demo_requested": "true"}},
            {"erased": True},
        ], "the other person's part of the shared delivery is not kept as it came"
        [(_, other_offer)] = receiver.for_lead(other_id)
        assert other_offer["lead"]["name"] == other["name"]
