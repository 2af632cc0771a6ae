"""The router while PostgreSQL is down: its routes answer 503 with Retry-After (a read and a
write), /readyz says not ready, and once PostgreSQL is back its consumer applies the
`lead.scored` that arrived during the outage and the ones after, without a traceback logged."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from leadrelay.broker import EmbeddedBroker
from leadrelay.harness.postgres import PostgresCluster
from services.router.app import create_app
from shared.clock import ManualClock
from shared.events import encode_event
from tests.conftest import migrate
from tests.router.conftest import ADMIN, ADMIN_TOKEN, router_settings, scored
from tests.router.receiver import WebhookReceiver
from tests.router.test_api import add_sdr, produce
from tests.support import eventually, running_app

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def router_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database("router")
    migrate("router", url)
    return url


async def test_router_answers_503_while_postgresql_is_down_and_resumes(
    postgres_cluster: PostgresCluster, router_url: str, broker: EmbeddedBroker,
    topic_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = router_settings(
        router_url, kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN,
        sla_reminder_fraction=0, timer_interval_seconds=0.1,
    )
    clock = ManualClock()

    async def send(lead_id: str) -> None:
        event = scored(lead_id, clock=clock)
        await produce(settings, settings.topics.scores, lead_id, encode_event(event))

    async with WebhookReceiver() as receiver, running_app(create_app(settings)) as client:
        client.headers.update(ADMIN)

        async def assigned(lead_id: str) -> list[Any]:
            answer = await client.get("/v1/assignments", params={"lead_id": lead_id})
            return answer.json() if answer.status_code == 200 else []

        await add_sdr(client, "ada", receiver.url("/ada"))
        await send("before")
        await eventually(lambda: assigned("before"), timeout=30)

        await asyncio.to_thread(postgres_cluster.stop, "fast")
        await send("during")
        read = await client.get("/v1/assignments", params={"lead_id": "before"})
        write = await client.post("/v1/sdrs", json={
            "name": "bob", "email": "bob@seller.example", "webhook_url": receiver.url("/bob")})
        ready = await client.get("/readyz")
        await asyncio.sleep(2.0)  # the outage lasts; the consumer and the loops meet it
        await asyncio.to_thread(postgres_cluster.start)

        await send("after")
        during = await eventually(lambda: assigned("during"), timeout=60)
        after = await eventually(lambda: assigned("after"), timeout=60)
        await eventually(lambda: client.get("/readyz"),
                         until=lambda answer: answer.status_code == 200, timeout=30)

    for answer in (read, write, ready):
        assert answer.status_code == 503, answer.text
    assert read.headers["retry-after"] and write.headers["retry-after"]
    assert ready.json()["checks"]["database"] is False
    assert during[0]["lead_id"] == "during" and after[0]["lead_id"] == "after"
    loud = [record.getMessage() for record in caplog.records
            if record.exc_info or "stopped unexpectedly" in record.getMessage()]
    assert not loud, loud


async def test_router_answers_503_while_its_sqlite_file_cannot_be_opened(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str,
) -> None:
    path = tmp_path / "router.db"
    path.mkdir()  # where the file should be, a directory: SQLite cannot open it
    settings = router_settings(
        f"sqlite+aiosqlite:///{path}", admin_token=ADMIN_TOKEN,
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_prefix=topic_prefix)
    async with running_app(create_app(settings)) as client:
        client.headers.update(ADMIN)
        answers = [
            await client.get("/v1/people"),
            await client.post("/v1/people", json={"name": "ada", "email": "ada@seller.example"}),
            await client.get("/v1/reports/sla"),
        ]
    assert [answer.status_code for answer in answers] == [503] * 3, [a.text for a in answers]
    assert all(answer.headers["retry-after"] for answer in answers)
