"""JSON routes: `415` for a body that is not JSON, `413` over the configured size limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from services.ingest.app import create_app
from services.ingest.models import lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, running_app

pytestmark = pytest.mark.broker

ADMIN = ADMIN_TOKEN
JSON_ROUTES = [
    ("POST", "/v1/leads", {"email": "body@acme.io"}),
    ("POST", "/v1/leads/batch", {"leads": [{"email": "body@acme.io"}]}),
    ("POST", "/v1/signals", {"email": "body@acme.io", "type": "page_view"}),
    ("POST", "/v1/signals/batch", {"signals": [{"email": "body@acme.io", "type": "page_view"}]}),
    ("PUT", "/v1/sources/body-api", {"kind": "api"}),
    ("POST", "/v1/erasures", {"email": "body@acme.io"}),
]


@pytest.fixture
def limited(settings: IngestSettings) -> IngestSettings:
    return settings.model_copy(
        update={"max_body_bytes": 2048, "batch_max_bytes": 8192, "admin_token": ADMIN}
    )


async def test_a_body_that_is_not_json_is_415_on_every_json_route(
    limited: IngestSettings,
) -> None:
    answers = []
    async with running_app(create_app(limited), headers=ADMIN_HEADERS) as client:
        for method, path, body in JSON_ROUTES:
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = {"Authorization": f"Bearer {ADMIN}"}
                if content_type:
                    headers["Content-Type"] = content_type
                answer = await client.request(method, path, content=json.dumps(body),
                                              headers=headers)
                answers.append((path, content_type, answer))
    for path, content_type, answer in answers:
        assert answer.status_code == 415, (path, content_type, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/unsupported-media-type")
        assert "application/json" in answer.json()["detail"]
    assert await table_rows(limited, lead) == []


async def test_json_suffix_media_types_and_charset_are_json(limited: IngestSettings) -> None:
    async with running_app(create_app(limited), headers=ADMIN_HEADERS) as client:
        vendor = await client.post("/v1/leads", content=b'{"email": "vnd@acme.io"}',
                                   headers={"Content-Type": "application/vnd.acme+json"})
        charset = await client.post("/v1/leads", content=b'{"email": "utf8@acme.io"}',
                                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert vendor.status_code == charset.status_code == 202


def lead_of_size(number: int, size: int) -> dict[str, str]:
    padding = size - len(json.dumps({"email": f"pad{number}@acme.io", "industry": ""}))
    return {"email": f"pad{number}@acme.io", "industry": "x" * max(padding, 0)}


async def test_single_and_batch_routes_have_their_own_limits(limited: IngestSettings) -> None:
    small_batch = {"leads": [lead_of_size(number, 190) for number in range(20)]}  # ~4 KiB
    big_batch = {"leads": [lead_of_size(number, 190) for number in range(60)]}  # ~12 KiB
    async with running_app(create_app(limited), headers=ADMIN_HEADERS) as client:
        single = await client.post("/v1/leads", json={**lead_of_size(0, 190),
                                                      "company": "c" * 2000})
        batch = await client.post("/v1/leads/batch", json=small_batch)
        too_big = await client.post("/v1/leads/batch", json=big_batch)
        signal = await client.post("/v1/signals", json={
            "email": "s@acme.io", "type": "page_view", "url": "https://acme.io/" + "p" * 3000})
    assert single.status_code == 413, single.text
    assert single.headers["content-type"] == "application/problem+json"
    assert "2048 bytes" in single.json()["detail"]
    assert batch.status_code == 202, batch.text
    assert too_big.status_code == 413
    assert "8192 bytes" in too_big.json()["detail"]
    assert signal.status_code == 413
    assert len(await table_rows(limited, lead)) == 20
    assert len(await table_rows(limited, submission)) == 20


async def test_a_streamed_body_without_length_is_cut_at_the_limit(
    limited: IngestSettings,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "stream@acme.io", "industry": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    async with running_app(create_app(limited), headers=ADMIN_HEADERS) as client:
        answer = await client.post("/v1/leads", content=chunks(),
                                   headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert await table_rows(limited, lead) == []


async def test_text_no_database_can_store_is_422_on_json_and_dropped_on_lenient_channels(
    limited: IngestSettings,
) -> None:
    """PostgreSQL refuses NUL characters: the JSON API names the field, forms and webhooks
    drop the character and keep the lead (found by schemathesis)."""
    zapier = {"Authorization": "Bearer zapier-token-0123456789",
              "Content-Type": "application/json"}
    async with running_app(create_app(limited), headers=ADMIN_HEADERS) as client:
        nul = await client.post("/v1/leads", content=b'{"email": "n@acme.io", "name": "A\\u0000"}',
                                headers={"Content-Type": "application/json"})
        surrogate = await client.post(
            "/v1/leads/batch", content=b'{"leads": [{"email": "s@acme.io", "source": "\\udbb2"}]}',
            headers={"Content-Type": "application/json"})
        latin1 = await client.post("/v1/signals", headers={"Content-Type": "application/json"},
                                   content='{"email": "é@acme.io"}'.encode("latin-1"))
        form = await client.post("/v1/forms/contact-form",
                                 content=b"email=form%40acme.io&name=Fo%00rm",
                                 headers={"Origin": "https://www.example.com",
                                          "Content-Type": "application/x-www-form-urlencoded",
                                          "Accept": "application/json"})
        webhook = await client.post("/v1/webhooks/zapier", headers=zapier,
                                    content=b'{"email": "hook@acme.io", "name": "Ho\\u0000ok"}')
    assert nul.status_code == surrogate.status_code == latin1.status_code == 422
    assert nul.json()["errors"][0]["field"] == "name"
    assert surrogate.json()["errors"][0]["field"] == "leads.0.source"
    assert latin1.json()["errors"][0]["message"].startswith("not UTF-8")
    assert form.status_code == webhook.status_code == 202, (form.text, webhook.text)
    names = {row["email"]: row["name"] for row in await table_rows(limited, lead)}
    assert names == {"form@acme.io": "Form", "hook@acme.io": "Hook"}


async def test_json_nested_too_deeply_is_422_on_json_routes_and_webhooks(
    limited: IngestSettings,
) -> None:
    """Deeper than the recursion limit: json.loads raises RecursionError, not a 500."""
    deep = b'{"email": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    zapier = {"Authorization": "Bearer zapier-token-0123456789",
              "Content-Type": "application/json"}
    settings = limited.model_copy(update={"max_body_bytes": 65536})
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        api = await client.post("/v1/leads", content=deep,
                                headers={"Content-Type": "application/json"})
        webhook = await client.post("/v1/webhooks/zapier", headers=zapier, content=deep)
    assert api.status_code == 422, api.text
    assert api.headers["content-type"] == "application/problem+json"
    assert "nested too deeply" in api.json()["errors"][0]["message"]
    assert 400 <= webhook.status_code < 500, webhook.text
    assert await table_rows(settings, lead) == []
