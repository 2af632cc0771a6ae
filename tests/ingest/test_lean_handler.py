"""The lean handler: valid lead and signal posts skip FastAPI's dependency solving, and every
other request gets exactly the answer FastAPI's own handler gives."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest

from services.ingest.api import route
from services.ingest.api.dependencies import ingest_context
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.support import ADMIN_HEADERS, running_app

pytestmark = pytest.mark.broker

JSON = {"content-type": "application/json"}
LEAD = {"email": "grace@example.org", "name": "Grace Hopper", "country": "US"}
SIGNAL = {"email": "grace@example.org", "type": "pricing_page_view",
          "url": "https://example.com/pricing", "occurred_at": "2026-01-05T09:00:00Z"}
INVALID: list[tuple[str, dict[str, Any]]] = [
    ("/v1/leads", {"json": {"email": "not-an-email", "country": "Atlantis"}}),
    ("/v1/leads", {"json": [LEAD]}),
    ("/v1/leads", {"content": b"null", "headers": JSON}),
    ("/v1/leads", {"content": b"", "headers": JSON}),
    ("/v1/leads", {"content": b'{"email": ', "headers": JSON}),
    ("/v1/leads", {"json": LEAD, "headers": {"idempotency-key": ""}}),
    ("/v1/leads", {"json": LEAD, "headers": {"idempotency-key": "k" * 256}}),
    ("/v1/leads", {"json": LEAD, "headers": {"x-source-key": "s" * 101}}),
    ("/v1/leads", {"json": {**LEAD, "external_id": "e" * 256}}),
    ("/v1/leads", {"json": {"email": "x"}, "headers": {"x-correlation-id": "c" * 129}}),
    ("/v1/leads/batch", {"json": {"leads": []}}),
    ("/v1/leads/batch", {"json": {"leads": [LEAD], "more": 1},
                         "headers": {"idempotency-key": "k" * 256}}),
    ("/v1/signals", {"json": {"type": "email_open"}}),
    ("/v1/signals", {"json": {**SIGNAL, "colour": "blue"}}),
    ("/v1/signals", {"json": SIGNAL, "headers": {"x-correlation-id": "c" * 129}}),
    ("/v1/signals/batch", {"json": {"signals": [SIGNAL, {"type": "nope"}]}}),
]


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI solved dependencies for."""
    paths: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


async def test_a_valid_lead_is_stored_without_fastapi_solving_its_parameters(
    settings: IngestSettings, solved: list[str]
) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        first = await client.post("/v1/leads", json=LEAD, headers={
            "idempotency-key": "grace-1", "x-source-key": "web", "x-correlation-id": "c-1"})
        replayed = await client.post("/v1/leads", json=LEAD, headers={
            "idempotency-key": "grace-1", "x-source-key": "web"})
        batch = await client.post("/v1/leads/batch", json={"leads": [LEAD, {"email": "x"}]})
        signal = await client.post("/v1/signals", json=SIGNAL)
        signals = await client.post("/v1/signals/batch", json={"signals": [SIGNAL]})
        stored = (await client.get(f"/v1/leads/{first.json()['lead_id']}")).json()
    assert (first.status_code, first.json()["status"]) == (202, "created")
    assert replayed.json() == first.json()
    assert [item["status"] for item in batch.json()["results"]] == ["unchanged", "invalid"]
    assert (stored["email"], stored["name"], stored["country"]) == (
        "grace@example.org", "Grace Hopper", "US")
    assert (signal.status_code, signal.json()["lead_id"]) == (202, first.json()["lead_id"])
    assert signal.json()["status"] == "recorded"
    assert signals.json()["results"] == [{**signal.json(), "status": "duplicate"}]
    assert not {"/v1/leads", "/v1/leads/batch", "/v1/signals", "/v1/signals/batch"} & set(
        solved)


async def test_invalid_requests_get_fastapis_own_answers(
    settings: IngestSettings, monkeypatch: pytest.MonkeyPatch, solved: list[str]
) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        lean = [await client.post(path, **request) for path, request in INVALID]
    monkeypatch.setattr(route, "lean_handler", lambda _route: None)
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        plain = [await client.post(path, **request) for path, request in INVALID]
    assert [answer.status_code for answer in lean] == [422] * len(INVALID)
    for (path, request), ours, theirs in zip(INVALID, lean, plain, strict=True):
        assert (ours.status_code, ours.headers["content-type"], ours.content) == (
            theirs.status_code, theirs.headers["content-type"], theirs.content), (path, request)


async def test_dependency_overrides_still_apply(settings: IngestSettings) -> None:
    app = create_app(settings)
    async with running_app(app, headers=ADMIN_HEADERS) as client:
        context = app.state.ingest
        seen: list[object] = []

        async def overridden() -> Any:
            seen.append(context)
            return context

        app.dependency_overrides[ingest_context] = overridden
        answer = await client.post("/v1/leads", json=LEAD)
    assert answer.status_code == 202
    assert seen == [context]


async def test_the_lead_key_route_is_answered_without_fastapi_solving_its_parameters(
    settings: IngestSettings, solved: list[str]
) -> None:
    """The scorer and the router ask for keys once per batch: as often as leads come in."""
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        lead_id = (await client.post("/v1/leads", json=LEAD)).json()["lead_id"]
        answer = await client.post("/v1/internal/lead-keys", json={"lead_ids": [lead_id]})
    assert answer.status_code == 200
    assert list(answer.json()["keys"]) == [lead_id]
    assert "/v1/internal/lead-keys" not in solved
