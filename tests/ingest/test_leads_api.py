"""ingest's JSON lead API against a real database and the real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.ingest import repository
from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from shared.db import Database, new_id
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, eventually, read_topic, running_app

pytestmark = pytest.mark.broker


async def read_events(settings: IngestSettings, count: int) -> list[dict[str, Any]]:
    return await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, count)


async def test_new_lead_is_stored_and_published(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answer = await client.post(
            "/v1/leads",
            json={"email": " Ada@Example.COM ", "name": " Ada ", "country": "gb",
                  "demo_requested": True},
        )
        assert answer.status_code == 202
        lead_id = answer.json()["lead_id"]
        assert answer.json()["status"] == "created"
        stored = (await client.get(f"/v1/leads/{lead_id}")).json()
        events = await read_events(settings, 1)
    assert stored["email"] == "ada@example.com"
    assert stored["name"] == "Ada"
    assert stored["country"] == "GB"
    assert stored["account_key"] == "example.com"
    assert events[0]["type"] == "lead.received"
    assert events[0]["lead_id"] == lead_id
    assert events[0]["data"]["lead"]["demo_requested"] is True


async def test_same_email_merges_and_publishes_what_changed(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = (await client.post("/v1/leads", json={"email": "bob@acme.io", "company": "Acme"}))
        second = await client.post("/v1/leads", json={"email": "BOB@acme.io", "name": "Bob",
                                                      "company": ""})
        third = await client.post("/v1/leads", json={"email": "bob@acme.io"})
        stored = (await client.get(f"/v1/leads/{first.json()['lead_id']}")).json()
        events = await read_events(settings, 2)
    assert second.json() == {"lead_id": first.json()["lead_id"], "status": "merged"}
    assert third.json()["status"] == "unchanged"
    assert stored["company"] == "Acme"
    assert stored["name"] == "Bob"
    assert [event["type"] for event in events] == ["lead.received", "lead.updated"]
    assert events[1]["data"]["changed_fields"] == ["name"]


async def test_invalid_lead_gets_problem_details(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answer = await client.post(
            "/v1/leads", json={"email": "not-an-email", "country": "Atlantis", "website": "nowhere"}
        )
        missing = await client.get("/v1/leads/nope")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    fields = {entry["field"] for entry in answer.json()["errors"]}
    assert fields == {"email", "country", "website"}
    assert missing.status_code == 404
    assert missing.json()["title"] == "Lead not found"


async def test_metrics_count_published_events(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        await client.post("/v1/leads", json={"email": "metered@example.com"})
        await read_events(settings, 1)

        async def scrape() -> str:
            return (await client.get("/metrics")).text

        # Published rows are marked a moment after the broker acknowledged them.
        text = await eventually(
            scrape, until=lambda body: "leadrelay_outbox_backlog 0.0" in body
        )
    assert 'events_published_total{type="lead.received"} 1.0' in text


async def test_profile_fields_are_normalised_stored_and_published(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answer = await client.post("/v1/leads", json={
            "email": "marie@gmail.com", "first_name": "Marie", "last_name": " Curie ",
            "country": "France", "phone": "06 12 34 56 78", "website": "https://www.radium.fr/",
            "industry": "Research", "annual_revenue": 1200000, "language": "French",
            "consent": {"email": True, "phone": False, "legal_basis": "consent"},
            "attribution": {"referrer": "https://www.google.com/",
                            "landing_page": "https://radium.fr/?utm_source=google&utm_medium=cpc"},
        })
        assert answer.status_code == 202, answer.text
        stored = (await client.get(f"/v1/leads/{answer.json()['lead_id']}")).json()
        events = await read_events(settings, 1)
    assert stored["name"] == "Marie Curie"
    assert (stored["country"], stored["phone"], stored["language"]) == ("FR", "+33612345678", "fr")
    assert (stored["website"], stored["account_key"]) == ("radium.fr", "radium.fr")
    assert stored["consent"]["email"] is True and stored["consent"]["phone"] is False
    assert stored["consent"]["given_at"] is not None
    assert stored["attribution"]["utm_medium"] == "cpc"
    published = events[0]["data"]["lead"]
    assert published["consent"]["legal_basis"] == "consent"
    assert published["attribution"]["utm_source"] == "google"
    assert published["annual_revenue"] == 1200000


async def test_merge_keeps_known_values_and_merges_attribution(settings: IngestSettings) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/leads", json={
            "email": "kim@acme.io", "phone": "+1 281 332 2575",
            "attribution": {"utm_source": "linkedin"}})
        second = await client.post("/v1/leads", json={
            "email": "kim@acme.io", "phone": " ", "industry": "Software",
            "attribution": {"utm_campaign": "launch"}})
        stored = (await client.get(f"/v1/leads/{first.json()['lead_id']}")).json()
        events = await read_events(settings, 2)
    assert second.json()["status"] == "merged"
    assert stored["phone"] == "+12813322575"
    assert stored["attribution"]["utm_source"] == "linkedin"
    assert stored["attribution"]["utm_campaign"] == "launch"
    assert events[1]["data"]["changed_fields"] == ["attribution", "industry"]


async def test_a_lead_sent_again_under_its_external_id_is_a_duplicate(
    settings: IngestSettings,
) -> None:
    lead = {"email": "kim@acme.io", "name": "Kim", "external_id": "crm-41"}
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/leads", json=lead, headers={"X-Source-Key": "crm"})
        again = await client.post("/v1/leads", json={**lead, "name": "Kim Park"},
                                  headers={"X-Source-Key": "crm"})
        elsewhere = await client.post("/v1/leads", json={**lead, "name": "Kim Park"},
                                      headers={"X-Source-Key": "fair"})
        blank = await client.post("/v1/leads", json={**lead, "external_id": ""})
        stored = (await client.get(f"/v1/leads/{first.json()['lead_id']}")).json()
        events = await read_events(settings, 2)
    assert first.json()["status"] == "created"
    assert (again.status_code, again.json()) == (
        202, {"lead_id": first.json()["lead_id"], "status": "duplicate"})
    assert elsewhere.json() == {"lead_id": first.json()["lead_id"], "status": "merged"}
    assert stored["name"] == "Kim Park"  # from the other source; the duplicate changed nothing
    assert [event["type"] for event in events] == ["lead.received", "lead.updated"]
    assert "external_id" not in events[0]["data"]["lead"]
    assert blank.status_code == 422
    assert [entry["field"] for entry in blank.json()["errors"]] == ["external_id"]


async def test_concurrent_posts_of_one_external_id_store_one_submission(
    settings: IngestSettings,
) -> None:
    lead = {"email": "lee@acme.io", "external_id": "form-7"}
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answers = await asyncio.gather(*(
            client.post("/v1/leads", json={**lead, "name": f"Lee {n}"}) for n in range(12)))
        submissions = [row for row in await table_rows(settings, submission)
                       if row["external_id"] == "form-7"]
    statuses = sorted(answer.json()["status"] for answer in answers)
    assert statuses == ["created"] + ["duplicate"] * 11
    assert len({answer.json()["lead_id"] for answer in answers}) == 1
    assert [(row["source_key"], row["lead_id"]) for row in submissions] == [
        ("api", answers[0].json()["lead_id"])]


async def test_a_lead_another_instance_creates_meanwhile_gets_the_submission_merged(
    settings: IngestSettings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between this request's look-up and its insert, another instance commits a lead with the
    same email. On PostgreSQL that can happen (`FOR UPDATE` locks no missing row): the unique
    conflict rolls back only the insert's savepoint, and the submission merges into that lead.
    On SQLite the write lock taken before the look-up rules it out."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("on SQLite no other writer can come between the look-up and the insert")
    theirs = new_id()
    insert_lead = repository.insert_lead

    async def insert_after_another_instance(session: Any, values: Any) -> None:
        if values["email"] == "race@acme.io" and values["id"] != theirs:
            other = Database(settings.database_url)
            try:
                async with other.transaction() as their_session:
                    await insert_lead(their_session, {**values, "id": theirs, "name": None})
            finally:
                await other.dispose()
        await insert_lead(session, values)

    monkeypatch.setattr(repository, "insert_lead", insert_after_another_instance)
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answer = await client.post("/v1/leads", json={"email": "race@acme.io", "name": "Rae"})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"lead_id": theirs, "status": "merged"}
    leads = [row for row in await table_rows(settings, lead) if row["email"] == "race@acme.io"]
    assert [(row["id"], row["name"]) for row in leads] == [(theirs, "Rae")]
    submissions = [row for row in await table_rows(settings, submission)
                   if row["lead_id"] == theirs]
    assert len(submissions) == 1
