"""Vendor webhooks end to end: documented payloads in, verified, mapped, stored once, published."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from shared.clock import ManualClock
from tests.ingest import signing
from tests.ingest.conftest import OLD_SECRET, SECRET, TOKEN, fixture_bytes, table_rows
from tests.support import ADMIN_HEADERS, ingest_keys, opened, read_topic, running_app

pytestmark = pytest.mark.broker

NOW = datetime.now(UTC).replace(microsecond=0)
JSON = {"content-type": "application/json"}


def ms(clock: ManualClock) -> int:
    return int(clock.now().timestamp() * 1000)


def hubspot_headers(clock: ManualClock, body: bytes, secret: str = SECRET,
                    url: str = "http://testserver/v1/webhooks/hubspot") -> dict[str, str]:
    stamp = ms(clock)
    return {**JSON, "X-HubSpot-Request-Timestamp": str(stamp),
            "X-HubSpot-Signature-v3": signing.hubspot_v3(secret, "POST", url, body, stamp)}


def webflow_headers(clock: ManualClock, body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = ms(clock)
    return {**JSON, "x-webflow-timestamp": str(stamp),
            "x-webflow-signature": signing.webflow(secret, body, stamp)}


def standard_headers(clock: ManualClock, body: bytes, message_id: str,
                     secret: str = SECRET) -> dict[str, str]:
    stamp = int(clock.now().timestamp())
    return {**JSON, "webhook-id": message_id, "webhook-timestamp": str(stamp),
            "webhook-signature": signing.standard(secret, message_id, stamp, body)}


async def post(client: httpx.AsyncClient, key: str, body: bytes,
               headers: dict[str, str]) -> httpx.Response:
    return await client.post(f"/v1/webhooks/{key}", content=body, headers=headers)


async def published(settings: IngestSettings, count: int) -> list[dict[str, Any]]:
    """The first events on the leads topic; also lets the relay finish before the app stops."""
    return await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, count)


async def stored_leads(settings: IngestSettings) -> dict[str, dict[str, Any]]:
    return {row["email"]: row for row in await table_rows(settings, lead)}


async def test_webflow_form_submission_becomes_a_lead_and_replay_is_ignored(
    settings: IngestSettings,
) -> None:
    clock = ManualClock(NOW)
    body = fixture_bytes("webflow/example.json")
    async with running_app(create_app(settings, clock=clock)) as client:
        first = await post(client, "webflow", body, webflow_headers(clock, body))
        replay = await post(client, "webflow", body, webflow_headers(clock, body))
        events = await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    assert first.status_code == 202, first.text
    assert first.json()["results"][0]["status"] == "created"
    assert replay.status_code == 200
    assert replay.json()["results"][0]["status"] == "duplicate"
    stored = (await stored_leads(settings))["zaphod@heartofgold.ai"]
    assert stored["name"] == "Zaphod Beeblebrox"
    assert stored["phone"] == "+15550000000"
    rows = await table_rows(settings, submission)
    assert len(rows) == 1
    assert rows[0]["external_id"] == "6321ca84df3949bfc6752327"
    assert rows[0]["raw"] == body.decode()
    opened_event = opened(events, await ingest_keys(settings.database_url))[0]
    assert opened_event["data"]["lead"]["email"] == "zaphod@heartofgold.ai"
    assert "zaphod" not in json.dumps(events[0]), "the log holds the email readable"


async def test_typeform_answers_map_by_type_and_ref_with_source_tags(
    settings: IngestSettings,
) -> None:
    body = fixture_bytes("typeform/example.json")
    headers = {**JSON, "Typeform-Signature": signing.typeform(SECRET, body)}
    async with running_app(create_app(settings)) as client:
        answer = await post(client, "typeform", body, headers)
        events = await published(settings, 1)
    assert answer.status_code == 202, answer.text
    stored = (await stored_leads(settings))["laura@example.com"]
    assert stored["name"] == "Laura"
    assert stored["attribution"] == {"channel": "typeform", "campaign": "city-survey"}
    assert events[0]["data"]["lead"]["attribution"]["campaign"] == "city-survey"
    [row] = await table_rows(settings, submission)
    assert row["external_id"] == "lT4Z3j:a3a12ec67a1365927098a606107fac15"


async def test_hubspot_thin_events_are_kept_without_a_lead(settings: IngestSettings) -> None:
    clock = ManualClock(NOW)
    body = fixture_bytes("hubspot/example.json")
    async with running_app(create_app(settings, clock=clock)) as client:
        answer = await post(client, "hubspot", body, hubspot_headers(clock, body))
        rotated = await post(client, "hubspot", body, hubspot_headers(clock, body, OLD_SECRET))
        reused = await client.post(
            "/v1/leads", json={"email": "x@example.com", "external_id": "62515:12345:1"},
            headers={"X-Source-Key": "hubspot", **ADMIN_HEADERS})
    assert answer.status_code == 202, answer.text
    assert (reused.status_code, reused.json()["title"]) == (409, "External id already used")
    assert answer.json()["results"] == [
        {"external_id": "62515:12345:1", "status": "unmatched", "lead_id": None}
    ]
    assert rotated.json()["results"][0]["status"] == "duplicate"
    assert await stored_leads(settings) == {}
    [row] = await table_rows(settings, submission)
    assert row["lead_id"] is None and row["raw"] == body.decode()


async def test_hubspot_workflow_contact_becomes_a_lead_and_its_replay_is_a_duplicate(
    settings: IngestSettings,
) -> None:
    clock = ManualClock(NOW)
    body = json.dumps({"vid": 51, "properties": {
        "email": {"value": "grace@navy.mil"}, "firstname": {"value": "Grace"},
        "lastname": {"value": "Hopper"}, "country": {"value": "United States"},
        "phone": {"value": "(281) 332-2575"}}}).encode()
    async with running_app(create_app(settings, clock=clock)) as client:
        signed = hubspot_headers(clock, body)
        answer = await post(client, "hubspot", body, signed)
        replay = await post(client, "hubspot", body, signed)
        clock.advance(1)
        resent = await post(client, "hubspot", body, hubspot_headers(clock, body))
        await published(settings, 1)
    assert answer.status_code == 202, answer.text
    stored = (await stored_leads(settings))["grace@navy.mil"]
    assert (stored["name"], stored["country"], stored["phone"]) == (
        "Grace Hopper", "US", "+12813322575")
    assert (replay.status_code, replay.json()["results"][0]["status"]) == (200, "duplicate")
    assert resent.json()["results"][0]["status"] == "unchanged", "a new request is not a replay"
    rows = await table_rows(settings, submission)
    assert len(rows) == 2
    assert rows[0]["external_id"].startswith(f"workflow:{signed['X-HubSpot-Request-Timestamp']}:")


async def test_standard_webhooks_full_payload_with_mapping(settings: IngestSettings) -> None:
    clock = ManualClock(NOW)
    document = json.loads(fixture_bytes("standardwebhooks/example-full.json"))
    document["data"]["email"] = "john.smith@acme.example"
    body = json.dumps(document).encode()
    async with running_app(create_app(settings, clock=clock)) as client:
        answer = await post(client, "standard", body, standard_headers(clock, body, "msg_1"))
        thin = fixture_bytes("standardwebhooks/example.json")
        unmatched = await post(client, "standard", thin, standard_headers(clock, thin, "msg_2"))
        await published(settings, 1)
    assert answer.status_code == 202, answer.text
    stored = (await stored_leads(settings))["john.smith@acme.example"]
    assert (stored["name"], stored["phone"], stored["job_title"]) == (
        "John Smith", None, "Engineer, ACME")
    assert unmatched.json()["results"][0]["status"] == "unmatched"


async def test_zapier_json_and_form_with_bearer_token(settings: IngestSettings) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    document = json.loads(fixture_bytes("zapier/example.json"))
    body = json.dumps({**document, "email": "bryan@zapier.example"}).encode()
    form = fixture_bytes("zapier/example-form.txt") + b"&email=bryan%40zapier.example"
    async with running_app(create_app(settings)) as client:
        as_json = await post(client, "zapier", body, {**JSON, **auth})
        as_form = await post(client, "zapier", form, {
            "content-type": "application/x-www-form-urlencoded", **auth})
        no_token = await post(client, "zapier", body, JSON)
        await published(settings, 1)
    assert as_json.status_code == 202, as_json.text
    assert as_form.json()["results"][0]["status"] == "unchanged"
    assert no_token.status_code == 401
    stored = (await stored_leads(settings))["bryan@zapier.example"]
    assert (stored["name"], stored["employee_count"]) == ("Bryan Helmig", 27)


async def test_zapier_record_without_external_id_sent_again_is_a_duplicate(
    settings: IngestSettings,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    record = {"first_name": "Bryan", "last_name": "Helmig", "email": "bryan@zapier.example"}
    body = json.dumps(record).encode()
    reordered = json.dumps(dict(reversed(record.items())), indent=2).encode()
    changed = json.dumps({**record, "age": "28"}).encode()
    async with running_app(create_app(settings)) as client:
        first = await post(client, "zapier", body, {**JSON, **auth})
        again = await post(client, "zapier", reordered, {**JSON, **auth})
        in_a_list = await post(client, "zapier", b"[" + body + b"]", {**JSON, **auth})
        new = await post(client, "zapier", changed, {**JSON, **auth})
        await published(settings, 2)
    assert first.json()["results"][0]["status"] == "created"
    assert (again.status_code, again.json()["results"][0]["status"]) == (200, "duplicate")
    assert in_a_list.json()["results"][0]["status"] == "duplicate"
    assert new.json()["results"][0]["status"] == "merged"
    identities = [row["external_id"] for row in await table_rows(settings, submission)]
    assert len(identities) == 2 and all(value.startswith("sha256:") for value in identities)


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "reserialised", "stale", "unsigned"])
async def test_bad_signature_is_401_and_writes_nothing(
    settings: IngestSettings, case: str
) -> None:
    clock = ManualClock(NOW)
    body = fixture_bytes("webflow/example.json")
    headers = webflow_headers(clock, body, "not-the-secret" if case == "wrong_secret" else SECRET)
    sent = body
    if case == "tampered":
        sent = body.replace(b"Zaphod", b"Arthur")
    elif case == "reserialised":
        sent = json.dumps(json.loads(body)).encode()
    elif case == "unsigned":
        headers = JSON
    async with running_app(create_app(settings, clock=clock)) as client:
        if case == "stale":
            clock.advance(301)
        answer = await post(client, "webflow", sent, headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert await table_rows(settings, submission) == []
    assert await table_rows(settings, lead) == []


async def test_freshness_299_seconds_accepted_301_refused(settings: IngestSettings) -> None:
    clock = ManualClock(NOW)
    body = fixture_bytes("standardwebhooks/vector-rust-body.json")
    async with running_app(create_app(settings, clock=clock)) as client:
        fresh = standard_headers(clock, body, "msg_fresh")
        stale = standard_headers(clock, body, "msg_stale")
        clock.advance(299)
        accepted = await post(client, "standard", body, fresh)
        clock.advance(2)
        refused = await post(client, "standard", body, stale)
        await published(settings, 1)
    assert accepted.status_code == 202, accepted.text
    assert refused.status_code == 401


async def test_limits_types_and_unknown_sources(settings: IngestSettings) -> None:
    clock = ManualClock(NOW)
    big = b'{"pad": "' + b"x" * (256 * 1024) + b'"}'
    async with running_app(create_app(settings, clock=clock)) as client:
        too_large = await post(client, "webflow", big, webflow_headers(clock, big))
        wrong_type = await post(client, "webflow", b"a=b", {"content-type": "text/plain"})
        unknown = await post(client, "nobody", b"{}", JSON)
        a_form = await post(client, "contact-form", b"{}", JSON)
        not_json = await post(client, "webflow", b"[1,", webflow_headers(clock, b"[1,"))
    assert too_large.status_code == 413
    assert wrong_type.status_code == 415
    assert unknown.status_code == 404 and a_form.status_code == 404
    assert not_json.status_code == 422
    assert await table_rows(settings, submission) == []
