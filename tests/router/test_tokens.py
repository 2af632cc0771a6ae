"""People's API tokens: issued (shown once), listed without the secret, revoked at once."""

from __future__ import annotations

import pytest

from leadrelay.broker import EmbeddedBroker
from services.router.app import create_app
from tests.router.conftest import ADMIN, router_settings
from tests.support import running_app

pytestmark = pytest.mark.broker


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
