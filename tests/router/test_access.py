"""The HTTP API end to end: roster import in YAML, rules, who may see and do what, signed
accept links, decisions, deliveries, reports and metrics. Real broker, real database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from leadrelay.broker import EmbeddedBroker
from services.router.action_links import LINK_PURPOSE, link_expiry, link_token
from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.encryption import SecretBox
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.receiver import ALLOWED_WEBHOOKS
from tests.router.test_api import produce
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker

ROSTER = """
teams:
  - name: Inside
    manager_email: boss@seller.example
    timezone: Europe/Paris
people:
  - {name: Boss, email: boss@seller.example, role: manager}
  - name: Ann
    email: ann@seller.example
    teams: [Inside]
    languages: [en, fr]
    territories: [fr, gb]
    timezone: Europe/Paris
    capacity: 5
    weight: 2
  - {name: Ben, email: ben@seller.example, teams: [Inside]}
  - {name: Cy, email: cy@seller.example}
"""

RULES = """
rules:
  - id: inside
    pool: Inside
    strategy: round_robin
"""


@pytest.fixture
def settings(router_url: str, broker: EmbeddedBroker, topic_prefix: str) -> RouterSettings:
    return RouterSettings(
        database_url=router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, public_base_url="http://testserver",
        admin_token=ADMIN_TOKEN, webhook_allowed_urls=ALLOWED_WEBHOOKS, timer_interval_seconds=0.1,
        sla_reminder_fraction=0,
    )


def accept_token(settings: RouterSettings, assignment: dict[str, Any]) -> str:
    """The token of the Accept link the router puts in the assignment's notifications."""
    keys = SecretBox.from_setting(settings.encryption_keys).signing_keys(LINK_PURPOSE)
    deadline = datetime.fromisoformat(assignment["deadline_at"])
    return link_token(keys, assignment["id"], "accept",
                      link_expiry(deadline, settings.action_link_grace_seconds))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_reps_see_and_act_only_on_their_own_assignments(settings: RouterSettings) -> None:
    async with running_app(create_app(settings)) as client:
        assert (await client.post("/v1/roster/import", content=ROSTER)).status_code == 401
        imported = await client.post("/v1/roster/import", content=ROSTER,
                                     headers=ADMIN | {"Content-Type": "application/yaml"})
        assert imported.status_code == 200, imported.text
        people = {person["name"]: person for person in imported.json()["people_created"]}
        assert imported.json()["teams_created"] == 1
        ann, ben, boss, cy = (people[name] for name in ("Ann", "Ben", "Boss", "Cy"))
        assert ann["languages"] == ["en", "fr"] and ann["territories"] == ["FR", "GB"]
        assert (ann["capacity"], ann["weight"], ann["timezone"]) == (5, 2.0, "Europe/Paris")
        rep_only = await client.put("/v1/rules", content=RULES, headers=bearer(ann["token"]))
        assert rep_only.status_code == 403
        rules = await client.put("/v1/rules", content=RULES,
                                 headers=ADMIN | {"Content-Type": "application/yaml"})
        assert rules.json()["version"] == "1"
        bad = await client.put("/v1/rules", json={"rules": [{"id": "x", "pool": "Nowhere"}]},
                               headers=ADMIN)
        assert bad.status_code == 422 and bad.json()["team"] == "Nowhere"

        clock = ManualClock()
        for lead_id in ("lead-a", "lead-b"):
            event = scored(lead_id, clock=clock)
            await produce(settings, settings.topics.scores, lead_id, encode_event(event))
        listed = await eventually(
            lambda: client.get("/v1/assignments", headers=ADMIN),
            until=lambda answer: len(answer.json()) == 2,
        )
        by_rep = {row["sdr_id"]: row for row in listed.json()}
        assert set(by_rep) == {ann["id"], ben["id"]}
        mine, theirs = by_rep[ann["id"]], by_rep[ben["id"]]

        ann_headers = bearer(ann["token"])
        assert (await client.get(f"/v1/assignments/{mine['id']}", headers=ann_headers)
                ).status_code == 200
        for call in (
            client.get(f"/v1/assignments/{theirs['id']}", headers=ann_headers),
            client.get(f"/v1/assignments/{theirs['id']}/decision", headers=ann_headers),
            client.post(f"/v1/assignments/{theirs['id']}/accept", headers=ann_headers),
            client.post(f"/v1/assignments/{theirs['id']}/reject", headers=ann_headers,
                        json={"reason_code": "other"}),
        ):
            answer = await call
            assert answer.status_code == 404, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
        own_list = await client.get("/v1/assignments", headers=ann_headers)
        assert [row["id"] for row in own_list.json()] == [mine["id"]]
        managed = await client.get("/v1/assignments", headers=bearer(boss["token"]))
        assert {row["id"] for row in managed.json()} == {mine["id"], theirs["id"]}
        outsider = await client.get("/v1/assignments", headers=bearer(cy["token"]))
        assert outsider.json() == []
        assert (await client.get("/v1/people", headers=ann_headers)).status_code == 403
        assert (await client.get("/v1/assignments", headers=bearer("lr_wrong"))).status_code == 401

        decision = await client.get(f"/v1/assignments/{mine['id']}/decision",
                                    headers=ann_headers)
        assert decision.json()["rule_id"] == "inside"
        assert decision.json()["rules_version"] == "1"
        assert set(decision.json()["pools"][0]["candidates"]) == {ann["id"], ben["id"]}
        assert decision.json()["chosen"] == ann["id"]

        away = await client.put(f"/v1/people/{ann['id']}/presence", json={"presence": "away"},
                                headers=ann_headers)
        assert away.json()["presence"] == "away"
        not_hers = await client.put(f"/v1/people/{ben['id']}/presence",
                                    json={"presence": "away"}, headers=ann_headers)
        assert not_hers.status_code == 404
        me = await client.get("/v1/me", headers=ann_headers)
        assert me.json()["email"] == "ann@seller.example"

        # The signed link in the notification works alone, for that assignment and action.
        token = accept_token(settings, mine)
        wrong_action = await client.post(f"/v1/assignments/{mine['id']}/reject?token={token}",
                                          json={"reason_code": "other"})
        assert wrong_action.status_code == 401  # not a credential for this action
        # Found by Schemathesis: the link is checked before the body (a 401, not a 422).
        for path, body in (("qualify", {"bant": {}}), ("reject", {}), ("accept", None)):
            forged = await client.post(
                f"/v1/assignments/{mine['id']}/{path}?token=1999999999.AAAA", json=body)
            assert forged.status_code == 401, (path, forged.text)
        wrong_action_bad_body = await client.post(
            f"/v1/assignments/{mine['id']}/qualify?token={token}", json={"bant": {}})
        assert wrong_action_bad_body.status_code == 401, wrong_action_bad_body.text
        wrong_assignment = await client.post(
            f"/v1/assignments/{theirs['id']}/accept?token={token}")
        assert wrong_assignment.status_code == 401  # nor for another assignment
        clicked = await client.post(f"/v1/assignments/{mine['id']}/accept?token={token}")
        assert clicked.status_code == 200, clicked.text
        assert clicked.json()["status"] == "accepted"
        contacted = await client.post(f"/v1/assignments/{mine['id']}/contacted",
                                      headers=ann_headers)
        assert contacted.json()["status"] == "contacted"
        no_bant = await client.post(f"/v1/assignments/{mine['id']}/qualify",
                                    json={"bant": {}}, headers=ann_headers)
        assert no_bant.status_code == 422
        missing_reason = await client.post(f"/v1/assignments/{theirs['id']}/reject",
                                           json={}, headers=bearer(ben["token"]))
        assert missing_reason.status_code == 422

        reports: dict[str, Any] = {}
        for name in ("speed-to-lead", "sla", "fairness"):
            answer = await client.get(f"/v1/reports/{name}", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            reports[name] = answer.json()
            assert (await client.get(f"/v1/reports/{name}", headers=ann_headers)
                    ).status_code == 403
        metrics = (await client.get("/metrics")).text
    assert reports["sla"]["accept"]["met"] == 1
    overall = reports["speed-to-lead"]["overall"]
    assert overall["scored_to_assigned"]["count"] == 2
    assert overall["accepted_to_contacted"]["count"] == 1
    [sdr_pool] = [pool for pool in reports["fairness"]["by_pool"] if pool["role"] == "sdr"]
    shares = {row["rep_id"]: row for row in sdr_pool["reps"]}
    assert shares[ann["id"]]["leads"] == 1
    # Targets only among the Inside pool the rules use (Ann weight 2, Ben 1): Cy, in no team,
    # has none, and theirs add up to the whole. Each weight counts the rep's presence within
    # the window (Ann goes away above), which moves with the test's timing on a loaded
    # machine (0.72 seen in CI for 2/3); spread over four reps Ann's would be 0.5 at most.
    targets = {rep_id: row["target_share"] for rep_id, row in shares.items()
               if row.get("target_share") is not None}
    assert set(targets) == {ann["id"], ben["id"]}
    assert sum(targets.values()) == pytest.approx(1, abs=0.01)
    assert 0.55 < targets[ann["id"]] < 0.9
    assert cy["id"] not in shares
    assert 'leadrelay_router_assignments_total{role="sdr",strategy="round_robin"} 2.0' in metrics
