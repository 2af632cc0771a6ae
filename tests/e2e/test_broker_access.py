"""`leadrelay serve` against a broker it cannot use: one line saying why, a non-zero exit, soon;
not a service that hangs retrying (aiokafka reports a refused login as "Unable to bootstrap"
and tries again for ever)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leadrelay.broker import free_port
from tests.kafka_fixtures import KAFKA_MECHANISM, SecureKafka
from tests.support import SERVE_SECRETS

pytestmark = [pytest.mark.e2e]


def serve(service: str, env: dict[str, str], data_dir: Path) -> tuple[int, str, float]:
    """Run `leadrelay serve SERVICE`; its exit code, its stderr and how long it ran."""
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", "leadrelay", "serve", service, "--port", str(free_port())],
        env={**os.environ, "LEADRELAY_DATA_DIR": str(data_dir), **SERVE_SECRETS, **env},
        capture_output=True, text=True, timeout=60,
    )
    return finished.returncode, finished.stderr, time.monotonic() - started


@pytest.mark.kafka
def test_a_wrong_password_stops_serve_with_one_line_naming_broker_and_user(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    code, errors, took = serve(
        "scorer", secure_kafka.service_env(password="wrong-password"), tmp_path)
    assert code == 2
    assert took < 10
    [line] = errors.strip().splitlines()
    first_broker = secure_kafka.bootstrap_servers.split(",")[0]
    assert line.startswith(f"leadrelay serve scorer: Kafka broker {first_broker} refused user "
                           f"{secure_kafka.user!r} ({KAFKA_MECHANISM}): wrong user name or "
                           "password"), line
    assert "wrong-password" not in line


def test_an_unreachable_broker_stops_serve_after_the_start_up_timeout(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, errors, took = serve("ingest", {
        "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": address,
        "LEADRELAY_KAFKA_STARTUP_TIMEOUT_SECONDS": "2",
    }, tmp_path)
    assert code == 2
    assert took < 15
    [line] = errors.strip().splitlines()
    assert line.startswith("leadrelay serve ingest: no Kafka broker reachable after 2 s "
                           f"(LEADRELAY_KAFKA_BOOTSTRAP_SERVERS={address}"), line
