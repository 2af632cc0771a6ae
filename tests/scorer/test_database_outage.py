"""The scorer while PostgreSQL is down: its routes answer 503 with Retry-After (a read and a
write), /readyz says not ready, and once PostgreSQL is back its consumer scores the lead that
arrived during the outage and the ones after, without a traceback logged."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from leadrelay.broker import EmbeddedBroker
from leadrelay.harness.postgres import PostgresCluster
from services.scorer.app import create_app
from services.scorer.settings import ScorerSettings
from shared.events import LeadProfile, LeadReceived, LeadReceivedData
from tests.conftest import migrate
from tests.scorer.test_end_to_end import produce
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, eventually, running_app

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def scorer_url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.create_database("scorer")
    migrate("scorer", url)
    return url


async def test_scorer_answers_503_while_postgresql_is_down_and_resumes(
    postgres_cluster: PostgresCluster, scorer_url: str, broker: EmbeddedBroker,
    topic_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = ScorerSettings(database_url=scorer_url,
                              kafka_bootstrap_servers=broker.bootstrap_servers,
                              kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN)

    async def send(lead_id: str) -> None:
        event = LeadReceived(producer="ingest", lead_id=lead_id, data=LeadReceivedData(
            lead=LeadProfile(email=f"{lead_id}@buyer.example", job_title="VP Sales")))
        await produce(broker.bootstrap_servers, settings.topics.leads, [event])

    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:

        async def score_of(lead_id: str) -> httpx.Response:
            return await client.get(f"/v1/leads/{lead_id}/score")

        def found(answer: httpx.Response) -> bool:
            return answer.status_code == 200

        await send("before")
        await eventually(lambda: score_of("before"), until=found, timeout=30)

        await asyncio.to_thread(postgres_cluster.stop, "fast")
        await send("during")
        read = await score_of("before")
        write = await client.post("/v1/leads/before/stage", json={"stage": "opportunity"})
        ready = await client.get("/readyz")
        await asyncio.sleep(2.0)  # the outage lasts; the consumer and the loops meet it
        await asyncio.to_thread(postgres_cluster.start)

        await send("after")
        during = await eventually(lambda: score_of("during"), until=found, timeout=60)
        after = await eventually(lambda: score_of("after"), until=found, timeout=60)
        await eventually(lambda: client.get("/readyz"),
                         until=lambda answer: answer.status_code == 200, timeout=30)

    for answer in (read, write, ready):
        assert answer.status_code == 503, answer.text
    assert read.headers["retry-after"] and write.headers["retry-after"]
    assert ready.json()["checks"]["database"] is False
    assert during.json()["lead_id"] == "during" and after.json()["lead_id"] == "after"
    loud = [record.getMessage() for record in caplog.records
            if record.exc_info or "stopped unexpectedly" in record.getMessage()]
    assert not loud, loud


async def test_scorer_answers_503_while_its_sqlite_file_cannot_be_opened(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str,
) -> None:
    path = tmp_path / "scorer.db"
    path.mkdir()  # where the file should be, a directory: SQLite cannot open it
    settings = ScorerSettings(database_url=f"sqlite+aiosqlite:///{path}",
                              kafka_bootstrap_servers=broker.bootstrap_servers,
                              kafka_topic_prefix=topic_prefix, admin_token=ADMIN_TOKEN)
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        answers = [
            await client.get("/v1/leads/some-lead/score"),
            await client.post("/v1/leads/some-lead/stage", json={"stage": "opportunity"}),
            await client.get("/v1/scoring-model"),
        ]
    assert [answer.status_code for answer in answers] == [503] * 3, [a.text for a in answers]
    assert all(answer.headers["retry-after"] for answer in answers)
