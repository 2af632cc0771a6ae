"""A short run of `bench/faults.py` on both set-ups: its checker must find nothing lost,
doubled, stuck or undelivered while brokers, service instances and PostgreSQL are killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka_fixtures import kafka_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def run_faults(*arguments: str) -> str:
    finished = subprocess.run(
        [sys.executable, str(BENCH), *arguments], capture_output=True, text=True, timeout=600,
        check=False)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[:4000] + "\n...\n" + output[-2000:]
    return finished.stdout


def figure(output: str, label: str) -> int:
    line = next(line for line in output.splitlines() if line.strip().startswith(label))
    return int(line.split()[-1])


def test_the_embedded_broker_killed_twice_and_every_service_once_loses_nothing() -> None:
    output = run_faults("--embedded", "--leads", "500", "--rate", "25", "--service-kills", "1",
                        "--drain-seconds", "90", "--late-seconds", "30")
    assert figure(output, "acknowledged leads") >= 450, output
    assert figure(output, "lost") == 0, output
    assert output.count("kill -9 the embedded broker") == 2, output


@pytest.mark.postgres
@pytest.mark.kafka
def test_apache_kafka_and_postgresql_under_every_fault_lose_nothing() -> None:
    reason = kafka_unavailable()
    if reason:
        pytest.skip(reason)
    output = run_faults("--leads", "500", "--rate", "20", "--service-kills", "1",
                        "--drain-seconds", "120", "--late-seconds", "30")
    assert figure(output, "acknowledged leads") >= 450, output
    assert figure(output, "lost") == 0, output
    assert "pg_ctl restart -m immediate" in output and "Kafka broker" in output, output
