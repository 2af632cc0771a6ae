"""HubSpot's thin webhook events become leads: the contact fetched from a local server that
answers as HubSpot's CRM API documents it, over real sockets, retried from the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import select

from leadrelay.broker import EmbeddedBroker
from services.ingest.app import create_app
from services.ingest.crm_fetches import purge_finished
from services.ingest.models import crm_fetch, lead, source, submission
from services.ingest.repository import list_sources, save_source
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourceConfig, SourceRegistry, reencrypt_sources
from shared.db import Database
from shared.encryption import SecretBox, UndecryptableSecretError
from tests.conftest import migrate
from tests.ingest import signing
from tests.ingest.conftest import SECRET, fixture_bytes, table_rows
from tests.ingest.hubspot_api import HubSpotCrm, Scripted, error_body, rate_limited
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

CRM_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CONTACT = {"email": "Ada@Example.com", "firstname": "Ada", "lastname": "Lovelace",
           "company": "Analytical\u0000 Engines", "phone": "+44 20 7946 0958",
           "country": "United Kingdom", "numberofemployees": "42", "jobtitle": None,
           "favourite_engine": "difference"}
"""A contact as HubSpot holds it (a NUL, which PostgreSQL cannot store, in its company)."""
EVENT = fixture_bytes("hubspot/example.json")
"""A `contact.creation` of contact 123, as HubSpot sends it."""


@pytest.fixture
def migrated(database_url: str) -> str:
    """ingest's database, migrated (before the test's event loop runs)."""
    migrate("ingest", database_url)
    return database_url


def crm_settings(
    database_url: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
    crm: HubSpotCrm, **overrides: Any,
) -> IngestSettings:
    """ingest with a HubSpot source whose contacts come from `crm`, let past the SSRF guard."""
    source = {"key": "hubspot", "kind": "hubspot", "secrets": [SECRET], "crm_token": CRM_TOKEN,
              "crm_base_url": crm.base_url, "field_mapping": {"favourite_engine": "industry"}}
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": [source]}))
    values: dict[str, Any] = {
        "webhook_allowed_urls": crm.base_url, "crm_fetch_backoff_seconds": 0.05,
        "crm_fetch_poll_seconds": 0.05, **overrides}
    return IngestSettings(
        database_url=database_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, sources_file=sources_file, admin_token=ADMIN_TOKEN,
        **values,
    )


async def deliver(client: httpx.AsyncClient, body: bytes = EVENT) -> httpx.Response:
    """POST `body` to the HubSpot source, signed (v3) as HubSpot signs it now."""
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    url = "http://testserver/v1/webhooks/hubspot"
    return await client.post("/v1/webhooks/hubspot", content=body, headers={
        "content-type": "application/json", "X-HubSpot-Request-Timestamp": str(stamp),
        "X-HubSpot-Signature-v3": signing.hubspot_v3(SECRET, "POST", url, body, stamp)})


async def fetches(settings: IngestSettings) -> list[dict[str, Any]]:
    return sorted(await table_rows(settings, crm_fetch), key=lambda row: row["id"])


async def fetches_until(settings: IngestSettings, status: str) -> list[dict[str, Any]]:
    return await eventually(lambda: fetches(settings),
                            until=lambda rows: bool(rows) and rows[-1]["status"] == status)


def properties_asked(requests: Sequence[Any]) -> set[str]:
    return set(",".join(requests[0].query["properties"]).split(","))


async def test_a_contact_creation_event_becomes_a_lead_with_the_fetched_fields(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        async with running_app(create_app(settings)) as client:
            answer = await deliver(client)
            assert answer.status_code == 202, answer.text
            [done] = await fetches_until(settings, "done")
            replay = await deliver(client)
            events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    assert answer.status_code == 202, answer.text
    assert answer.json()["results"] == [
        {"external_id": "62515:12345:1", "status": "queued", "lead_id": None}]
    assert replay.json()["results"][0]["status"] == "duplicate"
    [request] = crm.requests
    assert request.path == "/crm/v3/objects/contacts/123"
    assert request.authorization == f"Bearer {CRM_TOKEN}"
    assert {"email", "firstname", "lastname", "company", "phone", "country",
            "numberofemployees", "favourite_engine"} <= properties_asked(crm.requests)
    [stored] = await table_rows(settings, lead)
    assert (stored["email"], stored["name"], stored["company"], stored["phone"],
            stored["country"], stored["employee_count"], stored["industry"]) == (
        "ada@example.com", "Ada Lovelace", "Analytical Engines", "+442079460958", "GB", 42,
        "difference")
    assert (done["lead_id"], done["attempts"], done["last_error"]) == (stored["id"], 1, None)
    channels = sorted((row["channel"], row["lead_id"]) for row in
                      await table_rows(settings, submission))
    assert channels == [("crm", stored["id"]), ("webhook", None)]
    [event] = opened(events, await ingest_keys(settings.database_url))
    assert (event["type"], event["data"]["lead"]["email"]) == ("lead.received", "ada@example.com")


async def test_a_batch_fetches_each_contact_once_and_merges_by_email(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    """The guide's two events (`eventType`), and a second change of one contact in the same
    batch, which waits for the fetch already queued."""
    events = json.loads(fixture_bytes("hubspot/example-webhooks-guide.json"))
    again = {**events[0], "eventId": 3816279341, "propertyName": "firstname"}
    body = json.dumps([*events, again]).encode()
    contacts = {"1246965": {"email": "grace@navy.example", "company": "US Navy"},
                "1246978": {"email": "GRACE@navy.example", "firstname": "Grace",
                            "lastname": "Hopper"}}
    async with HubSpotCrm(CRM_TOKEN, contacts) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        async with running_app(create_app(settings)) as client:
            answer = await deliver(client, body)
            await eventually(lambda: fetches(settings),
                             until=lambda rows: [row["status"] for row in rows] == ["done"] * 2)
            await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 2)
    assert [result["status"] for result in answer.json()["results"]] == ["queued"] * 3
    assert sorted(request.path.rsplit("/", 1)[1] for request in crm.requests) == [
        "1246965", "1246978"]
    [stored] = await table_rows(settings, lead)
    assert (stored["email"], stored["name"], stored["company"]) == (
        "grace@navy.example", "Grace Hopper", "US Navy")


async def test_a_429_waits_its_retry_after_then_the_fetch_succeeds(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}, [rate_limited(retry_after=2)]) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [waiting] = await eventually(
                lambda: fetches(settings), until=lambda rows: bool(rows and rows[0]["last_error"]))
            [done] = await fetches_until(settings, "done")
    assert waiting["status"] == "pending"
    assert waiting["last_error"] == (
        "HubSpot answered 429 RATE_LIMIT SECONDLY: You have reached your secondly limit.")
    first, second = crm.requests
    assert second.at - first.at >= 1.9, "retried before HubSpot's Retry-After (back-off 0.05 s)"
    assert done["attempts"] == 2
    [stored] = await table_rows(settings, lead)
    assert stored["email"] == "ada@example.com"


async def test_an_unknown_contact_ends_as_a_failure_without_retrying(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [failed] = await fetches_until(settings, "failed")
            others = await deliver(client, EVENT.replace(b'"eventId":1', b'"eventId":2'))
            await eventually(lambda: fetches(settings),
                             until=lambda rows: len(rows) == 2 and rows[1]["status"] == "failed")
    assert failed["last_error"] == (
        "HubSpot answered 404 OBJECT_NOT_FOUND: Object not found.  objectId are usually numeric.")
    assert (failed["attempts"], failed["lead_id"]) == (1, None)
    assert failed["finished_at"] is not None
    assert others.json()["results"][0]["status"] == "queued"
    assert len(crm.requests) == 2, "one call per fetch, none retried"
    assert await table_rows(settings, lead) == []


async def test_a_fetch_waiting_for_its_retry_completes_after_a_restart(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    unavailable = Scripted(503, error_body("Internal error", "INTERNAL_ERROR"))
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}, [unavailable]) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm,
                                crm_fetch_backoff_seconds=3.0)
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [waiting] = await eventually(
                lambda: fetches(settings), until=lambda rows: bool(rows and rows[0]["last_error"]))
        assert await table_rows(settings, lead) == []
        async with running_app(create_app(settings)):
            [done] = await fetches_until(settings, "done")
    assert (waiting["status"], waiting["last_error"]) == (
        "pending", "HubSpot answered 503 INTERNAL_ERROR: Internal error")
    assert waiting["due_at"] - waiting["created_at"] >= timedelta(seconds=2.9)
    assert (done["attempts"], len(crm.requests)) == (2, 2)
    [stored] = await table_rows(settings, lead)
    assert stored["email"] == "ada@example.com"


async def test_a_fetch_whose_process_died_during_the_call_is_taken_again_after_its_lease(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    """The first app stops while HubSpot has not answered yet: its claim lapses (twice the
    2-s time limit plus 1 s), then the next app takes the fetch."""
    hanging = Scripted(200, {"id": "123", "properties": {}}, delay=30)
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}, [hanging]) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm,
                                crm_fetch_timeout_seconds=2.0)
        async def calls() -> int:
            return len(crm.requests)

        async with running_app(create_app(settings)) as client:
            await deliver(client)
            await eventually(calls)
        [claimed] = await fetches(settings)
        async with running_app(create_app(settings)):
            [done] = await fetches_until(settings, "done")
    assert (claimed["status"], claimed["attempts"]) == ("pending", 1)
    assert claimed["claimed_until"] - claimed["created_at"] >= timedelta(seconds=4.9)
    assert (done["attempts"], len(crm.requests)) == (2, 2)
    assert crm.requests[1].at - crm.requests[0].at >= 4.5, "taken again before the lease ended"
    [stored] = await table_rows(settings, lead)
    assert stored["email"] == "ada@example.com"


async def test_a_fetch_whose_tries_never_finish_fails_without_another_call(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    """Every try so far was cut short (a process dying on it): the next claim gives up."""
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm,
                                crm_fetch_max_attempts=3)
        long_ago = datetime.now(UTC) - timedelta(minutes=5)
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                await session.execute(crm_fetch.insert().values(
                    source_key="hubspot", object_id="123", status="pending", attempts=3,
                    due_at=long_ago, claimed_until=long_ago, created_at=long_ago))
        finally:
            await db.dispose()
        async with running_app(create_app(settings)):
            [failed] = await fetches_until(settings, "failed")
    assert (failed["attempts"], failed["last_error"]) == (4, "gave up: 3 tries did not finish")
    assert crm.requests == []

async def test_a_refused_token_is_retried_then_given_up(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm("another-apps-token", {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm,
                                crm_fetch_max_attempts=3)
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [failed] = await fetches_until(settings, "failed")
    assert failed["attempts"] == 3 and len(crm.requests) == 3
    assert failed["last_error"].startswith(
        "gave up after 3 tries: HubSpot answered 401 INVALID_AUTHENTICATION: Authentication "
        "credentials not found.")
    assert CRM_TOKEN not in failed["last_error"]


async def test_a_crm_url_the_guard_does_not_allow_is_never_called(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm,
                                webhook_allowed_urls="")
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [failed] = await fetches_until(settings, "failed")
    assert failed["last_error"].startswith("the CRM URL is refused: 127.0.0.1, which is not")
    assert crm.requests == []



async def test_a_source_registered_through_the_api_keeps_its_token_encrypted_and_unshown(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        settings.sources_file.write_text(yaml.safe_dump({"sources": []}))
        config = {"kind": "hubspot", "secrets": [SECRET], "crm_token": CRM_TOKEN,
                  "crm_base_url": crm.base_url}
        async with running_app(create_app(settings)) as client:
            saved = await client.put("/v1/sources/hubspot", json=config, headers=ADMIN_HEADERS)
            shown = await client.get("/v1/sources/hubspot", headers=ADMIN_HEADERS)
            audit = await client.get("/v1/audit", headers=ADMIN_HEADERS)
            misplaced = await client.put("/v1/sources/zap", headers=ADMIN_HEADERS, json={
                "kind": "zapier", "secrets": [SECRET], "crm_token": CRM_TOKEN})
            private = await client.put("/v1/sources/other", headers=ADMIN_HEADERS, json={
                **config, "crm_base_url": "http://10.1.2.3:8080"})
            await deliver(client)
            await fetches_until(settings, "done")
    assert saved.status_code == 201, saved.text
    assert (shown.json()["crm_token_set"], shown.json()["crm_base_url"]) == (
        True, f"{config['crm_base_url']}/")
    assert misplaced.status_code == 422
    assert (private.status_code, private.json()["title"]) == (422, "CRM URL refused")
    assert "10.1.2.3, which is not a public internet address" in private.json()["detail"]
    for answer in (saved, shown, audit):
        assert CRM_TOKEN not in answer.text
    [row] = await table_rows(settings, source)
    stored = row["config"]["crm_token"]
    assert stored != CRM_TOKEN
    assert SecretBox.from_setting(settings.encryption_keys).decrypt(stored) == CRM_TOKEN
    assert crm.requests[0].authorization == f"Bearer {CRM_TOKEN}"


def test_reencrypt_moves_the_crm_token_to_the_newest_key(migrated: str) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    config = SourceConfig(kind="hubspot", secrets=[SECRET], crm_token=CRM_TOKEN)

    async def store_then_reencrypt() -> dict[str, Any]:
        db = Database(migrated)
        now = datetime.now(UTC)
        try:
            async with db.transaction() as session:
                await save_source(session, "hubspot", "hubspot",
                                  SourceRegistry({}, SecretBox([old])).stored_config(config), now)
            await reencrypt_sources(db, SecretBox([new, old]))
            async with db.reading() as session:
                [row] = await list_sources(session)
                return dict(row["config"])
        finally:
            await db.dispose()

    stored = asyncio.run(store_then_reencrypt())
    assert SecretBox([new]).decrypt(stored["crm_token"]) == CRM_TOKEN
    with pytest.raises(UndecryptableSecretError):
        SecretBox([old]).decrypt(stored["crm_token"])


async def test_erasing_the_lead_deletes_its_fetch_and_the_contact_copy(
    migrated: str, broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path,
) -> None:
    async with HubSpotCrm(CRM_TOKEN, {"123": CONTACT}) as crm:
        settings = crm_settings(migrated, broker, topic_prefix, tmp_path, crm)
        async with running_app(create_app(settings)) as client:
            await deliver(client)
            [done] = await fetches_until(settings, "done")
            erased = await client.delete(f"/v1/leads/{done['lead_id']}", headers=ADMIN_HEADERS)
    assert erased.status_code == 204, erased.text
    assert await fetches(settings) == []
    [thin] = await table_rows(settings, submission)
    assert (thin["channel"], thin["lead_id"]) == ("webhook", None)
    assert "Lovelace" not in json.dumps(thin, default=str)


def test_finished_fetches_are_purged_with_the_submissions_and_waiting_ones_kept(
    migrated: str,
) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=100)

    async def purge() -> list[tuple[str, str]]:
        db = Database(migrated)
        try:
            async with db.transaction() as session:
                for contact, status, finished in (("1", "done", long_ago),
                                                  ("2", "failed", long_ago),
                                                  ("3", "done", now), ("4", "pending", None)):
                    await session.execute(crm_fetch.insert().values(
                        source_key="hubspot", object_id=contact, status=status, attempts=1,
                        due_at=long_ago, created_at=long_ago, finished_at=finished))
                await purge_finished(session, now - timedelta(days=90))
            async with db.reading() as session:
                rows = await session.execute(select(crm_fetch.c.object_id, crm_fetch.c.status))
                return sorted((row.object_id, row.status) for row in rows)
        finally:
            await db.dispose()

    assert asyncio.run(purge()) == [("3", "done"), ("4", "pending")]
