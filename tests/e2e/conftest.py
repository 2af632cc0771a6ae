"""The two set-ups the end-to-end tests run on: `tansu-sqlite`, the embedded default (tansu
broker, an SQLite file per service), and `kafka-postgres`, the production path (Apache Kafka's
3-broker cluster over SASL_SSL with idempotent producers, replication 3 and two in sync, and
PostgreSQL).

A module asks for `platform`; each module gets its own topic prefix and, on PostgreSQL, its own
throwaway database, dropped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from leadrelay.broker import EmbeddedBroker, embedded_consumer_env
from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tests.kafka_fixtures import SecureKafka


@dataclass(frozen=True)
class Platform:
    """A broker and a kind of database, as the services and the tests' own clients see them."""

    name: str
    bootstrap_servers: str
    service_env: dict[str, str]
    """The services' broker settings beyond the bootstrap servers."""
    database_url: str | None
    """One PostgreSQL database for every service; None: an SQLite file each."""
    client_security: dict[str, Any] = field(default_factory=dict)
    """aiokafka's TLS and SASL keyword arguments for the tests' own clients."""

    def topic_prefix(self, base: str) -> str:
        return f"{base}{self.name.split('-')[0]}{uuid.uuid4().hex[:6]}"


@pytest.fixture(
    scope="module",
    params=["tansu-sqlite",
            pytest.param("kafka-postgres", marks=[pytest.mark.kafka, pytest.mark.postgres])],
)
def platform(request: pytest.FixtureRequest, postgres_available: bool) -> Iterator[Platform]:
    if request.param == "tansu-sqlite":
        broker: EmbeddedBroker = request.getfixturevalue("broker")
        yield Platform(request.param, broker.bootstrap_servers, embedded_consumer_env(), None)
        return
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable")
    kafka: SecureKafka = request.getfixturevalue("secure_kafka")
    database = create_pg_database()
    try:
        yield Platform(request.param, kafka.bootstrap_servers, kafka.service_env(),
                       pg_url(database), kafka.client_security())
    finally:
        drop_pg_database(database)
