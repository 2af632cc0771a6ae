"""People's API tokens: issued (shown once), listed without the secret, revoked at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from leadrelay.broker import EmbeddedBroker
from leadrelay.catalog import SERVICES
from services.router import roster_repository
from services.router.access import new_token, token_hash
from services.router.app import create_app
from shared.clock import ManualClock
from shared.db import Database
from shared.migrations import upgrade
from tests.router.conftest import ADMIN, router_settings
from tests.support import running_app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.broker
async def test_a_person_token_is_issued_listed_and_revoked(
    router_url: str, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = router_settings(router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
                               kafka_topic_prefix=topic_prefix)
    async with running_app(create_app(settings)) as client:
        joined = (await client.post("/v1/people", headers=ADMIN, json={
            "name": "Ann", "email": "ann@seller.example"})).json()
        tokens = f"/v1/people/{joined['id']}/tokens"
        issued = await client.post(tokens, headers=ADMIN, json={"label": "new laptop"})
        assert issued.status_code == 201, issued.text
        second = issued.json()["token"]
        by_rep = await client.post(tokens, headers=bearer(second), json={})
        both = [(await client.get("/v1/me", headers=bearer(token))).status_code
                for token in (joined["token"], second)]
        listed = (await client.get(tokens, headers=ADMIN)).json()
        first_id = next(entry["id"] for entry in listed if entry["label"] == "joined")
        revoked = await client.delete(f"{tokens}/{first_id}", headers=ADMIN)
        after = [(await client.get("/v1/me", headers=bearer(token))).status_code
                 for token in (joined["token"], second)]
        relisted = (await client.get(tokens, headers=ADMIN)).json()
        unknown = await client.delete(f"{tokens}/no-such-token", headers=ADMIN)
        nobody = await client.get("/v1/people/no-one/tokens", headers=ADMIN)
    assert by_rep.status_code == 403
    assert both == [200, 200]
    assert [entry["label"] for entry in listed] == ["joined", "new laptop"]
    assert all("token" not in entry and "token_hash" not in entry for entry in listed)
    assert revoked.status_code == 204
    assert after == [401, 200]
    assert [entry["revoked_at"] is not None for entry in relisted] == [True, False]
    assert (unknown.status_code, nobody.status_code) == (404, 404)


async def test_a_token_given_before_tokens_had_their_table_keeps_working(
    database_url: str,
) -> None:
    spec = SERVICES["router"]
    await asyncio.to_thread(upgrade, spec.migrations_dir, database_url, spec.version_table,
                            "0005")
    token = new_token()
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            await session.execute(text(
                "INSERT INTO router_sdr (id, name, email, active, created_at, token_hash) "
                "VALUES ('p1', 'Ann', 'ann@seller.example', true, :at, :hash)"),
                {"at": ManualClock().now(), "hash": token_hash(token)})
        await asyncio.to_thread(upgrade, spec.migrations_dir, database_url, spec.version_table)
        async with db.reading() as session:
            found = await roster_repository.find_person_by_token(session, token_hash(token))
            tokens = await roster_repository.list_person_tokens(session, "p1")
    finally:
        await db.dispose()
    assert found is not None and found["id"] == "p1"
    assert [row["label"] for row in tokens] == ["joined"]
