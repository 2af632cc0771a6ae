"""With the database down, ingest answers 503 with Retry-After, never a 2xx for nothing stored."""

from __future__ import annotations

import pytest

from leadrelay.broker import EmbeddedBroker, free_port
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, running_app

pytestmark = pytest.mark.broker


async def test_database_down_is_503_with_retry_after(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    closed = free_port()
    settings = IngestSettings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/nowhere",
        kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic_prefix=topic_prefix,
        admin_token=ADMIN_TOKEN,
    )
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        lead = await client.post("/v1/leads", json={"email": "down@acme.io"})
        keyed = await client.post("/v1/leads", json={"email": "down@acme.io"},
                                  headers={"Idempotency-Key": "k"})
        signal = await client.post("/v1/signals", json={"email": "down@acme.io",
                                                        "type": "email_open"})
    for answer in (lead, keyed, signal):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        assert answer.headers["content-type"] == "application/problem+json"
