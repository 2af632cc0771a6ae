"""Kafka security settings: validation across fields, the clients' TLS and SASL options, and the
start-up check against the real SASL_SSL cluster (a refused login fails at once, clearly)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from leadrelay.broker import free_port
from leadrelay.harness.tls import ThrowawayAuthority
from shared.kafka import topic_configs
from shared.kafka_security import BrokerAccessError, check_broker_access, client_security
from shared.settings import ServiceSettings, load_settings
from tests.kafka_fixtures import KAFKA_MECHANISM, SecureKafka


class ExampleSettings(ServiceSettings):
    service_name: ClassVar[str] = "example"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayAuthority:
    return ThrowawayAuthority.create(tmp_path_factory.mktemp("tls"))


def secure(kafka: SecureKafka, **overrides: Any) -> ExampleSettings:
    given: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": KAFKA_MECHANISM,
        "kafka_sasl_username": kafka.user, "kafka_sasl_password": kafka.password,
        "kafka_ssl_cafile": kafka.authority.ca_file, "kafka_startup_timeout_seconds": 5,
    }
    return ExampleSettings(**{**given, **overrides})


@pytest.mark.parametrize(("given", "named"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "LEADRELAY_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
     "LEADRELAY_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "does not use SASL"),
    ({"kafka_ssl_cafile": "/etc/hostname"}, "does not use TLS"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/etc/hostname"},
     "LEADRELAY_KAFKA_SSL_KEYFILE"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nowhere/ca.pem"},
     "no such file"),
    ({"kafka_replication_factor": 1, "kafka_min_insync_replicas": 2},
     "LEADRELAY_KAFKA_MIN_INSYNC_REPLICAS=2"),
])
def test_inconsistent_settings_fail_validation_naming_the_variables(
    given: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        ExampleSettings(**given)
    assert named in str(raised.value)


def test_load_settings_explains_the_conflict_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADRELAY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LEADRELAY_KAFKA_SASL_PASSWORD", "secret")
    with pytest.raises(SystemExit) as exited:
        load_settings(ExampleSettings)
    assert exited.value.code == 2
    [problem] = capsys.readouterr().err.strip().splitlines()
    assert problem == ("leadrelay example: LEADRELAY_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
                       "LEADRELAY_KAFKA_SASL_USERNAME and LEADRELAY_KAFKA_SASL_PASSWORD")
    assert "secret" not in problem


def test_plaintext_clients_get_no_tls_and_no_login() -> None:
    assert client_security(ExampleSettings()) == {"security_protocol": "PLAINTEXT"}


def test_tls_clients_trust_the_ca_file_and_present_their_certificate(
    authority: ThrowawayAuthority,
) -> None:
    client = authority.issue("client", client=True)
    options = client_security(ExampleSettings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc", kafka_sasl_password="pw", kafka_ssl_cafile=authority.ca_file,
        kafka_ssl_certfile=client.chain, kafka_ssl_keyfile=client.key))
    context: ssl.SSLContext = options.pop("ssl_context")
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    [trusted] = context.get_ca_certs()
    assert dict(item[0] for item in trusted["subject"])["commonName"] == "leadrelay test CA"


def test_min_insync_replicas_becomes_a_topic_config() -> None:
    assert topic_configs(ExampleSettings()) == {}
    assert topic_configs(ExampleSettings(
        kafka_replication_factor=3, kafka_min_insync_replicas=2)) == {"min.insync.replicas": "2"}


@pytest.mark.kafka
async def test_the_right_login_passes_the_start_up_check(secure_kafka: SecureKafka) -> None:
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"):
        await check_broker_access(secure(secure_kafka, kafka_sasl_mechanism=mechanism))


@pytest.mark.kafka
async def test_a_wrong_password_fails_the_start_up_check_at_once(
    secure_kafka: SecureKafka,
) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerAccessError) as raised:
        await check_broker_access(secure(secure_kafka, kafka_sasl_password="not-the-password",
                                         kafka_startup_timeout_seconds=30))
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message
    assert f"refused user {secure_kafka.user!r} ({KAFKA_MECHANISM})" in message
    assert secure_kafka.cluster.brokers[0].address in secure_kafka.bootstrap_servers
    assert "not-the-password" not in message


@pytest.mark.kafka
async def test_an_untrusted_broker_certificate_fails_the_start_up_check(
    secure_kafka: SecureKafka, authority: ThrowawayAuthority
) -> None:
    with pytest.raises(BrokerAccessError, match=r"TLS handshake .* CERTIFICATE_VERIFY_FAILED"):
        await check_broker_access(secure(secure_kafka, kafka_ssl_cafile=authority.ca_file))


async def test_an_unreachable_broker_fails_the_start_up_check_after_its_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerAccessError) as raised:
        await check_broker_access(ExampleSettings(
            kafka_bootstrap_servers=address, kafka_startup_timeout_seconds=1))
    assert 1 <= time.monotonic() - started < 5
    assert f"no Kafka broker reachable after 1 s (LEADRELAY_KAFKA_BOOTSTRAP_SERVERS={address}" \
        in str(raised.value)


def test_a_cafile_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        ExampleSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path)
