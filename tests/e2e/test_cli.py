"""The README's first command: `leadrelay up --demo` starts everything and shows routing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leadrelay.broker import wait_for_port
from leadrelay.catalog import SERVICES
from leadrelay.cli import DEMO_RECEIVER_PORT
from leadrelay.processes import SCORER_SIGNALS_PORT
from shared.settings import EMBEDDED_BROKER_PORT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ports_in_use() -> list[int]:
    taken = []
    for port in (EMBEDDED_BROKER_PORT, DEMO_RECEIVER_PORT, SCORER_SIGNALS_PORT,
                 *(s.port for s in SERVICES.values())):
        try:
            wait_for_port("127.0.0.1", port, timeout=0.05)
        except TimeoutError:
            continue
        taken.append(port)
    return taken


def clean_env() -> dict[str, str]:
    """This environment without leadrelay's settings: `leadrelay up` on its defaults."""
    outside = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    return {
        key: value for key, value in os.environ.items()
        if not key.startswith("LEADRELAY_") and key not in outside
    }


def test_up_with_demo_routes_accepts_and_escalates(tmp_path: Path) -> None:
    if taken := ports_in_use():
        pytest.skip(f"the documented ports are in use here: {taken}")
    env = clean_env()
    finished = subprocess.run(
        [sys.executable, "-m", "leadrelay", "up", "--demo", "--exit-after-demo",
         "--sla-seconds", "3", "--data-dir", str(tmp_path / "data")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    output = finished.stdout
    assert finished.returncode == 0, output + finished.stderr
    assert "leadrelay is up" in output
    assert "embedded tansu" in output
    assert "offered" in output
    assert "accepted" in output
    assert "escalated" in output
    assert (tmp_path / "data" / "router.db").exists()
    assert not ports_in_use(), "leadrelay up left processes listening"


def test_sigterm_in_the_middle_of_the_demo_stops_everything_without_a_traceback(
    tmp_path: Path,
) -> None:
    if taken := ports_in_use():
        pytest.skip(f"the documented ports are in use here: {taken}")
    running = subprocess.Popen(
        [sys.executable, "-m", "leadrelay", "up", "--demo", "--data-dir", str(tmp_path / "data")],
        env=clean_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: list[str] = []
    try:
        assert running.stdout is not None
        deadline = time.monotonic() + 120
        for line in running.stdout:
            seen.append(line)
            if " offered " in line or time.monotonic() > deadline:
                break
        assert any(" offered " in line for line in seen), "".join(seen)
        running.send_signal(signal.SIGTERM)
        rest, errors = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    output = "".join(seen) + rest
    assert running.returncode == 0, output + errors
    assert "stopping..." in output
    assert "Traceback" not in output + errors, output + errors
    assert not ports_in_use(), "leadrelay up left processes listening after SIGTERM"
