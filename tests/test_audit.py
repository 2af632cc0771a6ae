"""The audit log of each service: who changed the sources, the scoring model, the roster, the
rules or the tokens, when, and what changed, secrets never; newest first, page by page."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.scorer.scoring_model import load_scoring_model
from tests.in_process import started
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN

__all__ = ["started"]  # the fixture

pytestmark = pytest.mark.broker

ADMIN_CALLER = "admin:" + hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:12]


async def audit_log(client: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    answer = await client.get("/v1/audit", headers=ADMIN_HEADERS, params=query)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


async def test_source_changes_are_logged_with_their_diff_and_no_secret(
    started: Callable[..., Any],
) -> None:
    path = "/v1/sources/crm"
    async with started("ingest") as client:
        for body in ({"kind": "api", "secrets": ["first-secret-0123456789"]},
                     {"kind": "api", "secrets": ["second-secret-0123456789"],
                      "defaults": {"channel": "crm"}}):
            assert (await client.put(path, headers=ADMIN_HEADERS, json=body)).is_success
        assert (await client.delete(path, headers=ADMIN_HEADERS)).status_code == 204
        entries = await audit_log(client)
    assert [entry["action"] for entry in entries] == [
        "source.deleted", "source.saved", "source.saved"]
    assert {(entry["actor"], entry["subject"]) for entry in entries} == {
        (ADMIN_CALLER, "source:crm")}
    changed = entries[1]["changes"]
    assert changed["defaults"] == {"before": {"channel": None, "campaign": None, "source": None},
                                   "after": {"channel": "crm", "campaign": None, "source": None}}
    assert changed["secrets"] == {"before": "[redacted]", "after": "[redacted]"}
    assert "kind" not in changed, "an unchanged field is not in the diff"
    assert "secret-0123456789" not in json.dumps(entries)


async def test_a_published_scoring_model_is_logged(started: Callable[..., Any]) -> None:
    draft = {**load_scoring_model().document(), "version": "audit-2"}
    async with started("scorer") as client:
        published = await client.put("/v1/scoring-model", headers=ADMIN_HEADERS, json=draft)
        assert published.status_code == 200, published.text
        entries = await audit_log(client)
    assert [(entry["action"], entry["actor"]) for entry in entries] == [
        ("scoring_model.published", ADMIN_CALLER)]
    assert entries[0]["changes"]["version"]["after"] == "audit-2"


async def test_roster_rules_and_token_changes_are_logged_page_by_page(
    started: Callable[..., Any],
) -> None:
    # No DNS here: the reps' webhook host is allow-listed rather than resolved.
    async with started("router", webhook_allowed_urls="https://hooks.example.com") as client:
        team = (await client.post("/v1/teams", headers=ADMIN_HEADERS,
                                  json={"name": "Inside"})).json()
        joined = (await client.post("/v1/people", headers=ADMIN_HEADERS, json={
            "name": "Ann", "email": "ann@seller.example", "teams": ["Inside"],
            "webhook_url": "https://hooks.example.com/ann"})).json()
        ann = {"Authorization": f"Bearer {joined['token']}"}
        presence = await client.put(f"/v1/people/{joined['id']}/presence", headers=ann,
                                    json={"presence": "away"})
        rules = await client.put("/v1/rules", headers=ADMIN_HEADERS, json={
            "rules": [{"id": "inside", "pool": "Inside"}]})
        tokens = f"/v1/people/{joined['id']}/tokens"
        issued = (await client.post(tokens, headers=ADMIN_HEADERS, json={})).json()
        revoked = await client.delete(f"{tokens}/{issued['id']}", headers=ADMIN_HEADERS)
        first_page = (await client.get("/v1/audit", headers=ADMIN_HEADERS,
                                       params={"limit": 4})).json()
        rest = await audit_log(client, limit=4, before=first_page["next_before"])
        of_ann = await audit_log(client, subject=f"person:{joined['id']}")
        by_rep = await client.get("/v1/audit", headers=ann)
    assert (presence.status_code, rules.status_code, revoked.status_code) == (200, 200, 204)
    entries = first_page["entries"] + rest
    assert [entry["action"] for entry in entries] == [
        "token.revoked", "token.issued", "rules.replaced", "person.changed", "person.added",
        "team.added"]
    assert [entry["id"] for entry in entries] == sorted(
        (entry["id"] for entry in entries), reverse=True)
    assert len(rest) == 2
    assert [entry["action"] for entry in of_ann] == [
        "token.revoked", "token.issued", "person.changed", "person.added"]
    by_action = {entry["action"]: entry for entry in entries}
    assert by_action["person.changed"]["actor"] == f"person:{joined['id']}"
    assert by_action["person.changed"]["changes"] == {
        "presence": {"before": "available", "after": "away"}}
    assert by_action["person.added"]["changes"]["teams"] == {"after": [team["id"]]}
    assert by_action["person.added"]["changes"]["webhook_secret"] == {"after": "[redacted]"}
    assert by_action["rules.replaced"]["changes"]["version"] == {"after": 1}
    assert by_action["token.issued"]["actor"] == ADMIN_CALLER
    logged = json.dumps(entries)
    assert joined["token"] not in logged and issued["token"] not in logged
    assert joined["webhook_secret"] not in logged
    assert by_rep.status_code == 403
