"""HTML forms posted the way a browser posts them, without a browser."""

from __future__ import annotations

import json

import pytest

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import VENDORS, fixture_bytes, table_rows
from tests.support import read_topic, running_app

pytestmark = pytest.mark.broker

BROWSER = {"content-type": "application/x-www-form-urlencoded",
           "origin": "https://www.example.com"}


async def test_browser_post_is_stored_and_redirected_to_the_thank_you_page(
    settings: IngestSettings,
) -> None:
    body = fixture_bytes("html-form/example.txt")
    async with running_app(create_app(settings)) as client:
        answer = await client.post("/v1/forms/contact-form", content=body, headers=BROWSER)
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    assert answer.status_code == 303
    assert answer.headers["location"] == "https://www.example.com/thanks"
    assert answer.headers["access-control-allow-origin"] == "https://www.example.com"
    [stored] = await table_rows(settings, lead)
    typed = dict(json.loads((VENDORS / "html-form/example.json").read_text())["entries"])
    assert stored["email"] == typed["email"]
    assert stored["name"] == "Zoë O'Neil"
    assert stored["company"] == typed["company"]
    assert (stored["phone"], stored["country"]) == ("+493012345678", "DE")
    assert stored["attribution"] == {"channel": "website"}
    [row] = await table_rows(settings, submission)
    assert row["raw"] == body.decode() and row["channel"] == "form"


async def test_multipart_with_json_accept_and_honeypot(settings: IngestSettings) -> None:
    async with running_app(create_app(settings)) as client:
        answer = await client.post(
            "/v1/forms/contact-form", data={"email": "multi@acme.io", "Full Name": "Multi Part"},
            files={"unused": ("a.txt", b"x")}, headers={"accept": "application/json"},
        )
        bot = await client.post("/v1/forms/contact-form",
                                content=b"email=bot%40spam.io&website=http%3A%2F%2Fspam",
                                headers=BROWSER)
        assert answer.status_code == 202, answer.text
        await read_topic(settings.kafka_bootstrap_servers, settings.topics.leads, 1)
    assert answer.json()["status"] == "created"
    assert bot.status_code == 303
    assert [row["email"] for row in await table_rows(settings, lead)] == ["multi@acme.io"]


async def test_refusals(settings: IngestSettings) -> None:
    async with running_app(create_app(settings)) as client:
        foreign = await client.post("/v1/forms/contact-form", content=b"email=a%40b.io",
                                    headers={**BROWSER, "origin": "https://evil.example"})
        too_large = await client.post("/v1/forms/contact-form",
                                      content=b"email=a%40b.io&m=" + b"x" * 17000, headers=BROWSER)
        wrong_type = await client.post("/v1/forms/contact-form", json={"email": "a@b.io"})
        no_email = await client.post("/v1/forms/contact-form", content=b"name=x", headers=BROWSER)
        unknown = await client.post("/v1/forms/nope", content=b"email=a%40b.io", headers=BROWSER)
    assert foreign.status_code == 403
    assert too_large.status_code == 413
    assert wrong_type.status_code == 415
    assert no_email.status_code == 422
    assert no_email.json()["errors"][0]["field"] == "email"
    assert unknown.status_code == 404
    assert await table_rows(settings, lead) == []


async def test_rate_limit_per_ip_answers_429_with_retry_after(settings: IngestSettings) -> None:
    async with running_app(create_app(settings)) as client:
        answers = [
            await client.post("/v1/forms/contact-form", content=b"name=x", headers=BROWSER)
            for _ in range(7)
        ]
    codes = [answer.status_code for answer in answers]
    assert codes[:5] == [422] * 5
    assert codes[5] == 429
    assert int(answers[5].headers["retry-after"]) >= 1
