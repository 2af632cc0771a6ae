"""Starting the services as child processes and stopping them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from leadrelay.preflight import StartupError


@dataclass
class ServiceProcess:
    """One service running as `python -m leadrelay serve SERVICE`, its output in a log file."""

    name: str
    port: int
    env: Mapping[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    service: str = ""
    """The service it runs, when `name` is not one (`scorer-signals` runs the scorer)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "leadrelay", "serve", self.service or self.name,
                 "--host", self.host, "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def last_log_line(self) -> str:
        """The last line the service wrote: the reason, when it refused to start."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "nothing logged"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: the crash a test simulates."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


SCORER_SIGNALS_PORT = 8704
"""Where `leadrelay up` serves the scorer's `signals` process (health and metrics)."""


def scorer_signals_beside(scorer: ServiceProcess, port: int, log_path: Path) -> ServiceProcess:
    """Make `scorer` the scorer's `leads` process and return the `signals` process to run beside
    it (`LEADRELAY_SCORER_LANES`): a campaign's signals then never take the CPU, nor the event
    loop, that new leads and buying signals need."""
    scorer.env = {**scorer.env, "LEADRELAY_SCORER_LANES": "leads"}
    return ServiceProcess("scorer-signals", port,
                          {**scorer.env, "LEADRELAY_SCORER_LANES": "signals"}, log_path,
                          service="scorer")


def wait_until_ready(services: list[ServiceProcess], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(services)
    while waiting:
        for service in list(waiting):
            if not service.alive():
                raise StartupError(
                    f"{service.name} exited during start-up: {service.last_log_line()} "
                    f"(see {service.log_path})")
            if service.ready():
                waiting.remove(service)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(service.name for service in waiting)
            raise TimeoutError(f"not ready after {timeout:.0f} s: {names}")
        time.sleep(0.1)
