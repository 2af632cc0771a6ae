"""Dead letters through each service's admin API and `leadrelay dead-letters`.

A replay goes through the consumer's idempotent path: the test breaks the scorer's handling of
`lead.received` (as a bug would, until a fixed version is deployed), lets the real consumer
dead-letter a real event from the real broker, mends the handling and replays: the lead is
scored once, and a second replay finds nothing. The command line runs against a real
`leadrelay serve scorer` process that dead-lettered a message breaking its contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import services.scorer.app as scorer_app_module
from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.processes import ServiceProcess, wait_until_ready
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.router.app import create_app as create_router
from services.router.settings import RouterSettings
from services.scorer.app import create_app as create_scorer
from services.scorer.consumer import ScorerConsumer
from services.scorer.models import INBOX
from services.scorer.settings import ScorerSettings
from shared.consumer import Handler
from shared.db import Database
from shared.events import Envelope, LeadProfile, LeadReceived, LeadReceivedData, encode_event
from tests.conftest import migrate
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, SERVE_SECRETS, eventually, running_app

pytestmark = pytest.mark.broker


async def produce(bootstrap_servers: str, topic: str, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


def received(lead_id: str) -> Envelope:
    return LeadReceived(producer="ingest", lead_id=lead_id, data=LeadReceivedData(
        lead=LeadProfile(email="ada@acme.example", company="Acme", country="FR",
                         employee_count=120, account_key="acme.example")))


class Bug:
    """The scorer's handling of `lead.received` fails while `present`."""

    present = True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        make_table = scorer_app_module.handler_table
        apply_fresh = ScorerConsumer.apply_fresh
        bug = self

        def handler_table(context: Any) -> dict[str, Handler]:
            table = make_table(context)
            mended = table["lead.received"]

            async def lead_received(session: AsyncSession, event: Any) -> None:
                if bug.present:
                    raise RuntimeError("scoring bug")
                await mended(session, event)

            return {**table, "lead.received": lead_received}

        async def fast_path(self: ScorerConsumer, session: AsyncSession, events: Any) -> None:
            if bug.present:
                raise RuntimeError("scoring bug")
            await apply_fresh(self, session, events)

        monkeypatch.setattr(scorer_app_module, "handler_table", handler_table)
        monkeypatch.setattr(ScorerConsumer, "apply_fresh", fast_path)


@pytest.fixture
def settings(database_url: str, broker: EmbeddedBroker, topic_prefix: str) -> ScorerSettings:
    """A scorer on its own (no ingest: events travel unsealed) on a migrated database."""
    migrate("scorer", database_url)
    return ScorerSettings(database_url=database_url, admin_token=ADMIN_TOKEN,
                          kafka_bootstrap_servers=broker.bootstrap_servers,
                          kafka_topic_prefix=topic_prefix, lead_keys_url="")


async def test_a_replayed_dead_letter_is_applied_once_through_the_consumer_path(
    settings: ScorerSettings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bug = Bug()
    bug.install(monkeypatch)
    lead_id = str(uuid.uuid4())
    event = received(lead_id)
    async with running_app(create_scorer(settings), headers=ADMIN_HEADERS) as scorer:
        await eventually(lambda: scorer.get("/readyz"),
                         until=lambda answer: answer.status_code == 200, timeout=30)
        await produce(settings.kafka_bootstrap_servers, settings.topics.leads, lead_id,
                      encode_event(event))
        listed = await eventually(lambda: scorer.get("/v1/dead-letters"),
                                  until=lambda answer: answer.json()["dead_letters"], timeout=30)
        [letter] = listed.json()["dead_letters"]
        assert (letter["event_id"], letter["event_type"], letter["key"]) == (
            str(event.event_id), "lead.received", lead_id)
        assert letter["error"] == "RuntimeError: scoring bug"
        shown = (await scorer.get(f"/v1/dead-letters/{letter['id']}")).json()
        assert json.loads(shown["payload"])["event_id"] == str(event.event_id)
        assert "Traceback" in shown["full_error"]

        still = await scorer.post(f"/v1/dead-letters/{letter['id']}/replay")
        assert still.status_code == 409, still.text
        assert still.headers["content-type"] == "application/problem+json"
        assert still.json()["detail"] == ("The event still cannot be applied: RuntimeError: "
                                          "scoring bug")
        assert (await scorer.get(f"/v1/leads/{lead_id}/score")).status_code == 404

        bug.present = False
        replayed = await scorer.post(f"/v1/dead-letters/{letter['id']}/replay")
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"id": letter["id"], "outcome": "applied",
                                   "event_id": str(event.event_id),
                                   "event_type": "lead.received"}
        score = await scorer.get(f"/v1/leads/{lead_id}/score")
        assert score.status_code == 200, score.text
        again = await scorer.post(f"/v1/dead-letters/{letter['id']}/replay")
        assert again.status_code == 404
        assert (await scorer.get("/v1/dead-letters")).json()["dead_letters"] == []

    database = Database(settings.database_url)
    try:
        async with database.reading() as session:
            recorded = await session.scalar(select(func.count()).select_from(INBOX.processed)
                                            .where(INBOX.processed.c.event_id
                                                   == str(event.event_id)))
    finally:
        await database.dispose()
    assert recorded == 1


async def test_replays_of_one_dead_letter_at_once_apply_it_once(
    settings: ScorerSettings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bug = Bug()
    bug.install(monkeypatch)
    lead_id = str(uuid.uuid4())
    async with running_app(create_scorer(settings), headers=ADMIN_HEADERS) as scorer:
        await produce(settings.kafka_bootstrap_servers, settings.topics.leads, lead_id,
                      encode_event(received(lead_id)))
        listed = await eventually(lambda: scorer.get("/v1/dead-letters"),
                                  until=lambda answer: answer.json()["dead_letters"], timeout=30)
        letter_id = listed.json()["dead_letters"][0]["id"]
        bug.present = False
        answers = await asyncio.gather(*(
            scorer.post(f"/v1/dead-letters/{letter_id}/replay") for _ in range(4)))
    assert sorted(answer.status_code for answer in answers) == [200, 404, 404, 404]


@pytest.mark.parametrize("build", ["ingest", "scorer", "router"])
def test_every_service_documents_its_admin_dead_letter_routes(build: str) -> None:
    common: dict[str, Any] = {"admin_token": ADMIN_TOKEN,
                              "encryption_keys": SERVE_SECRETS["LEADRELAY_ENCRYPTION_KEYS"]}
    app = {"ingest": lambda: create_ingest(IngestSettings(**common)),
           "scorer": lambda: create_scorer(ScorerSettings(**common)),
           "router": lambda: create_router(RouterSettings(
               **common, public_base_url="https://leads.example.com"))}[build]()
    paths = app.openapi()["paths"]
    operations = {
        ("/v1/dead-letters", "get"), ("/v1/dead-letters", "delete"),
        ("/v1/dead-letters/{letter_id}", "get"), ("/v1/dead-letters/{letter_id}", "delete"),
        ("/v1/dead-letters/{letter_id}/replay", "post"),
    }
    for path, method in operations:
        operation = paths[path][method]
        assert operation["security"] == [{"bearerAuth": ["admin"]}], (path, method)
        for status, response in operation["responses"].items():
            if status.startswith("4"):
                assert list(response["content"]) == ["application/problem+json"], (
                    path, method, status)
    assert "409" in paths["/v1/dead-letters/{letter_id}/replay"]["post"]["responses"]


# --- the command line against a real process ---------------------------------------------------


@pytest.fixture
def scorer_process(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[ServiceProcess]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'scorer.db'}"
    migrate("scorer", url)
    process = ServiceProcess("scorer", free_port(), {
        "LEADRELAY_DATA_DIR": str(tmp_path),
        "LEADRELAY_SCORER_DATABASE_URL": url,
        "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "LEADRELAY_KAFKA_TOPIC_PREFIX": f"dl{uuid.uuid4().hex[:8]}",
        "LEADRELAY_LEAD_KEYS_URL": "",
        "LEADRELAY_LOG_LEVEL": "WARNING",
        **SERVE_SECRETS,
    }, tmp_path / "scorer.log")
    process.start()
    try:
        wait_until_ready([process], timeout=60)
        yield process
    finally:
        process.stop()


def dead_letters(*argv: str, process: ServiceProcess,
                 token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEADRELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", "dead-letters", *argv, "scorer",
         "--url", process.url, "--admin-token", token] if argv[0] in {"list"} else
        [sys.executable, "-m", "leadrelay", "dead-letters", argv[0], "scorer", *argv[1:],
         "--url", process.url, "--admin-token", token],
        env=env, capture_output=True, text=True, timeout=60)


async def test_the_command_lists_shows_replays_and_purges(scorer_process: ServiceProcess) -> None:
    prefix = scorer_process.env["LEADRELAY_KAFKA_TOPIC_PREFIX"]
    lead_id = str(uuid.uuid4())
    broken = json.dumps({"type": "lead.received", "schema_version": 1,
                         "event_id": str(uuid.uuid4()), "lead_id": lead_id, "data": {}})
    await produce(scorer_process.env["LEADRELAY_KAFKA_BOOTSTRAP_SERVERS"], f"{prefix}.leads",
                  lead_id, broken.encode())
    async with httpx.AsyncClient(base_url=scorer_process.url, headers=ADMIN_HEADERS) as http:
        listed = await eventually(lambda: http.get("/v1/dead-letters"),
                                  until=lambda answer: answer.json()["dead_letters"], timeout=30)
    letter_id = str(listed.json()["dead_letters"][0]["id"])

    listing = dead_letters("list", process=scorer_process)
    assert listing.returncode == 0, listing.stderr
    [line] = listing.stdout.strip().splitlines()
    assert line.split()[0] == letter_id
    assert f"lead.received  key={lead_id}" in line

    shown = dead_letters("show", letter_id, process=scorer_process)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["payload"] == broken

    replayed = dead_letters("replay", letter_id, process=scorer_process)
    assert replayed.returncode == 1
    assert replayed.stdout.startswith(f"{letter_id}: The event still cannot be applied: "), (
        replayed.stdout)

    refused = dead_letters("purge", "--all", process=scorer_process, token="x" * 20)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"leadrelay dead-letters: scorer at {scorer_process.url} refused the admin token "
        "(401): give an admin token with --admin-token or LEADRELAY_ADMIN_TOKEN"]

    purged = dead_letters("purge", "--all", process=scorer_process)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "purged 1 dead letter(s) from scorer"
    assert dead_letters("list", process=scorer_process).stdout.strip() == (
        "no dead letters in scorer")
