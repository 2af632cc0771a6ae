"""Apache Kafka fixtures (a pytest plugin of tests/conftest.py): one 3-broker cluster for the run.

The cluster's client listeners are SASL_SSL (SCRAM and PLAIN users, a certificate from a CA the
fixture makes), its internal listeners plain text; both reach the same brokers, so tests of the
production path and harness tests share one JVM start-up. Topics default to replication 3 and
`min.insync.replicas` 2. Each test names its own topics (a prefix of its own).

Without Java, or Maven before the jars are fetched, the Kafka tests are skipped, unless
`LEADRELAY_REQUIRE_KAFKA=1`, which turns that into a failure (CI sets it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context

from leadrelay.harness.kafka import BrokerSecurity, KafkaCluster
from leadrelay.harness.kafka_jars import KafkaUnavailableError, missing_tools
from leadrelay.harness.tls import ThrowawayAuthority

KAFKA_USER = "leadrelay"
KAFKA_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class SecureKafka:
    """The session's cluster and what a client needs to log in to its SASL_SSL listeners."""

    cluster: KafkaCluster
    authority: ThrowawayAuthority
    user: str
    password: str

    @property
    def bootstrap_servers(self) -> str:
        return self.cluster.bootstrap_servers

    def service_env(self, *, password: str | None = None) -> dict[str, str]:
        """The environment of a service using this cluster as production would: SASL_SSL,
        idempotent producers, replication 3 with two in sync, no embedded-broker polling."""
        return {
            "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "LEADRELAY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LEADRELAY_KAFKA_SASL_MECHANISM": KAFKA_MECHANISM,
            "LEADRELAY_KAFKA_SASL_USERNAME": self.user,
            "LEADRELAY_KAFKA_SASL_PASSWORD": self.password if password is None else password,
            "LEADRELAY_KAFKA_SSL_CAFILE": str(self.authority.ca_file),
            "LEADRELAY_KAFKA_ENABLE_IDEMPOTENCE": "true",
            "LEADRELAY_KAFKA_REPLICATION_FACTOR": "3",
            "LEADRELAY_KAFKA_MIN_INSYNC_REPLICAS": "2",
            # Kafka's own default: it answers a waiting fetch as soon as data arrives.
            "LEADRELAY_KAFKA_FETCH_MAX_WAIT_MS": "500",
        }

    def client_security(self) -> dict[str, Any]:
        """aiokafka keyword arguments for a test's own clients on the SASL_SSL listeners."""
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=self.authority.ca_file),
            "sasl_mechanism": KAFKA_MECHANISM,
            "sasl_plain_username": self.user,
            "sasl_plain_password": self.password,
        }


def kafka_unavailable() -> str | None:
    """Why Apache Kafka cannot run here; fails the test run when `LEADRELAY_REQUIRE_KAFKA=1`."""
    missing = missing_tools()
    if not missing:
        return None
    reason = f"Apache Kafka needs {' and '.join(missing)} on PATH"
    if os.environ.get("LEADRELAY_REQUIRE_KAFKA") == "1":
        pytest.fail(f"{reason} and LEADRELAY_REQUIRE_KAFKA=1")
    return reason


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """Three brokers, SASL_SSL client listeners with one SCRAM/PLAIN user, for the whole run."""
    if reason := kafka_unavailable():
        pytest.skip(reason)
    authority = ThrowawayAuthority.create(tmp_path_factory.mktemp("kafka-tls"))
    broker_certificate = authority.issue("broker")
    password = secrets.token_urlsafe(16)
    cluster = KafkaCluster(3, BrokerSecurity(
        {KAFKA_USER: password}, broker_certificate.chain, broker_certificate.key))
    try:
        cluster.start()
    except KafkaUnavailableError as error:
        if os.environ.get("LEADRELAY_REQUIRE_KAFKA") == "1":
            raise
        pytest.skip(str(error))
    try:
        yield SecureKafka(cluster, authority, KAFKA_USER, password)
    finally:
        cluster.stop()
