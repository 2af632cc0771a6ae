"""Nobody where they do not belong: every route of every service's OpenAPI document, called
with no credential, a wrong one and a rep's token, answers 401 or 403, except the public
routes listed here; tokens rotate; an ingest source's API key posts leads and nothing else.

The apps run in-process on a migrated SQLite database and the real broker, as a client sees
them; a route added without a guard is missing from `PUBLIC` and fails the walk.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.auth import SECURITY_SCHEME
from shared.problems import PROBLEM_MEDIA_TYPE
from tests.in_process import FACTORIES, started
from tests.support import ADMIN_HEADERS

pytestmark = pytest.mark.broker

__all__ = ["started"]  # the fixture

PUBLIC: dict[str, set[tuple[str, str]]] = {
    name: {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} for name in FACTORIES
}
PUBLIC["ingest"] |= {("POST", "/v1/forms/{form_key}"), ("POST", "/v1/webhooks/{source_key}")}
# An action link's page and its button: the signed, expiring token in the link is the credential.
PUBLIC["router"] |= {("GET", "/v1/assignments/{assignment_id}/accept"),
                     ("POST", "/v1/assignments/{assignment_id}/accept/confirm"),
                     ("GET", "/v1/queue/{lead_id}/claim"),
                     ("POST", "/v1/queue/{lead_id}/claim/confirm")}
WRONG = {"Authorization": "Bearer not-a-token-of-this-system"}
MARKETING_KEY = "marketing-tool-key-0123456789"


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    ]


async def call(client: httpx.AsyncClient, method: str, path: str,
               headers: dict[str, str]) -> httpx.Response:
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    body = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    return await client.request(method, concrete, headers=headers, **body)


def refused(answer: httpx.Response, status: int) -> str | None:
    """Why `answer` is not the expected refusal; None when it is."""
    if answer.status_code != status:
        return f"{answer.status_code} {answer.text[:120]}"
    if answer.headers.get("content-type") != PROBLEM_MEDIA_TYPE:
        return f"not a problem document: {answer.headers.get('content-type')}"
    if status == 401 and answer.headers.get("www-authenticate") != "Bearer":
        return "no `WWW-Authenticate: Bearer`"
    return None


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_every_route_needs_a_credential_but_the_public_ones(
    name: str, started: Callable[..., Any]
) -> None:
    async with started(name) as client:
        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        rep = {}
        if name == "router":
            joined = await client.post("/v1/people", headers=ADMIN_HEADERS, json={
                "name": "Rep", "email": "rep@seller.example", "role": "sdr"})
            assert joined.status_code == 201, joined.text
            rep = {"Authorization": f"Bearer {joined.json()['token']}"}
        listed = operations(app)
        failures: list[str] = []
        for method, path, operation in listed:
            security = operation.get("security")
            if security is None:
                if (method, path) not in PUBLIC[name]:
                    failures.append(f"{method} {path}: no guard, and not a public route")
                continue
            roles = security[0][SECURITY_SCHEME]
            tries = [("no credential", {}, 401), ("a wrong token", WRONG, 401)]
            if "admin" in roles and rep:
                tries.append(("a rep's token", rep, 403))
            for label, headers, status in tries:
                problem = refused(await call(client, method, path, headers), status)
                if problem:
                    failures.append(f"{method} {path} with {label}: {problem}")
            admitted = await call(client, method, path, ADMIN_HEADERS)
            if admitted.status_code == 401:
                failures.append(f"{method} {path}: the admin token is refused")
        documented = {(method, path) for method, path, _ in listed}
        assert PUBLIC[name] <= documented, f"public routes gone: {PUBLIC[name] - documented}"
        for public_method, public_path in PUBLIC[name]:
            answer = await call(client, public_method, public_path, {})
            assert answer.status_code not in (401, 403), f"{public_path}: {answer.status_code}"
    assert not failures, "\n".join(failures)


async def test_admin_tokens_rotate_old_and_new_both_work_until_the_old_is_removed(
    started: Callable[..., Any],
) -> None:
    old, new = "old-admin-token-0123456789", "new-admin-token-0123456789"
    path = "/v1/audit"  # an admin route that answers as soon as the scorer is up
    async with started("scorer", admin_token=f"{new}, {old}") as client:
        during = [(await client.get(path, headers={"Authorization": f"Bearer {token}"}))
                  .status_code for token in (old, new)]
    async with started("scorer", admin_token=new) as client:
        after = [(await client.get(path, headers={"Authorization": f"Bearer {token}"}))
                 .status_code for token in (old, new)]
    assert during == [200, 200]
    assert after == [401, 200]


async def test_no_admin_token_configured_opens_nothing(started: Callable[..., Any]) -> None:
    async with started("ingest", admin_token="") as client:
        answers = [(await client.get(path, headers={"Authorization": "Bearer "})).status_code
                   for path in ("/v1/sources", "/v1/leads/x")]
    assert answers == [401, 401]


async def test_metrics_are_open_unless_a_metrics_token_is_set(
    started: Callable[..., Any],
) -> None:
    token = "metrics-token-0123456789"
    async with started("scorer") as client:
        open_metrics = (await client.get("/metrics")).status_code
    async with started("scorer", metrics_token=token) as client:
        without = await client.get("/metrics")
        admin = (await client.get("/metrics", headers=ADMIN_HEADERS)).status_code
        scraped = (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"}))
    assert open_metrics == 200
    assert refused(without, 401) is None
    assert admin == 401
    assert scraped.status_code == 200 and "leadrelay" in scraped.text


@pytest.fixture
async def ingest(started: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with started("ingest") as client:
        for key, kind, secrets in (("marketing", "api", [MARKETING_KEY]),
                                   ("other-tool", "api", ["other-tool-key-0123456789"]),
                                   ("zap", "zapier", ["zapier-token-0123456789"])):
            saved = await client.put(f"/v1/sources/{key}", headers=ADMIN_HEADERS,
                                     json={"kind": kind, "secrets": secrets})
            assert saved.status_code == 201, saved.text
        yield client


async def test_a_marketing_tool_posts_leads_and_signals_with_its_source_key(
    ingest: httpx.AsyncClient,
) -> None:
    tool = {"Authorization": f"Bearer {MARKETING_KEY}", "X-Source-Key": "marketing"}
    lead = await ingest.post("/v1/leads", headers=tool, json={"email": "ann@acme.example"})
    batch = await ingest.post("/v1/leads/batch", headers=tool,
                              json={"leads": [{"email": "bob@acme.example"}]})
    signal = await ingest.post("/v1/signals", headers=tool,
                               json={"email": "ann@acme.example", "type": "page_view"})
    assert [lead.status_code, batch.status_code, signal.status_code] == [202, 202, 202]
    read = await ingest.get(f"/v1/leads/{lead.json()['lead_id']}", headers=tool)
    sources = await ingest.get("/v1/sources", headers=tool)
    assert refused(read, 401) is None and refused(sources, 401) is None


@pytest.mark.parametrize(("label", "headers"), [
    ("no source named", {"Authorization": f"Bearer {MARKETING_KEY}"}),
    ("another source's key", {"Authorization": f"Bearer {MARKETING_KEY}",
                              "X-Source-Key": "other-tool"}),
    ("an unknown source", {"Authorization": f"Bearer {MARKETING_KEY}", "X-Source-Key": "nope"}),
    ("a webhook source's secret", {"Authorization": "Bearer zapier-token-0123456789",
                                   "X-Source-Key": "zap"}),
    ("the source key alone", {"X-Source-Key": "marketing"}),
])
async def test_a_source_key_works_for_its_own_api_source_only(
    ingest: httpx.AsyncClient, label: str, headers: dict[str, str],
) -> None:
    answer = await ingest.post("/v1/leads", headers=headers, json={"email": "eve@acme.example"})
    assert refused(answer, 401) is None, label


async def test_a_removed_source_key_stops_working(ingest: httpx.AsyncClient) -> None:
    tool = {"Authorization": f"Bearer {MARKETING_KEY}", "X-Source-Key": "marketing"}
    before = await ingest.post("/v1/leads", headers=tool, json={"email": "ann@acme.example"})
    rotated = await ingest.put("/v1/sources/marketing", headers=ADMIN_HEADERS,
                               json={"kind": "api", "secrets": ["next-marketing-key-0123456"]})
    after = await ingest.post("/v1/leads", headers=tool, json={"email": "ann@acme.example"})
    assert (before.status_code, rotated.status_code) == (202, 200)
    assert refused(after, 401) is None
