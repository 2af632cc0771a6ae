"""A whole leadrelay on this machine for tests and benchmarks: the three services' processes (the
scorer's in two lanes) and a webhook receiver standing in for the SDRs."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from leadrelay.broker import embedded_consumer_env, free_port
from leadrelay.catalog import SERVICES
from leadrelay.processes import ServiceProcess, scorer_signals_beside, wait_until_ready
from shared.migrations import upgrade


@dataclass
class WebhookReceiver:
    """A real HTTP server that records every JSON POST, standing in for SDR webhooks."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived_at: dict[str, float] = field(default_factory=dict)
    """When the latest notification for each lead arrived (`time.monotonic()`)."""
    deliveries: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    """(`webhook-id` header, body, `time.monotonic()`) of every POST, retries included."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def new_endpoint(self) -> str:
        return f"{self.base_url}/sdr/{uuid.uuid4().hex}"

    def for_lead(self, lead_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(path, body) for path, body in self.received if body.get("lead_id") == lead_id]


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when many webhooks arrive at once,
    # and each dropped SYN costs the sender a one-second retransmission.
    request_queue_size = 256
    daemon_threads = True


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as the chat tools and CRMs that receive webhooks do: the sender reuses
        # its connections instead of opening one per notification.
        protocol_version = "HTTP/1.1"
        # The headers and the body go out as two writes: with Nagle's algorithm on, the body
        # would wait for the sender's delayed ACK of the headers (40 ms).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(raw) < length:
                self.close_connection = True  # the sender went away mid-request (killed)
                return
            body = json.loads(raw or b"{}")
            arrived = time.monotonic()
            with receiver.lock:
                receiver.received.append((self.path, body))
                receiver.arrived_at[body.get("lead_id", "")] = arrived
                receiver.deliveries.append((self.headers.get("webhook-id", ""), body, arrived))
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _Server(("127.0.0.1", free_port()), Handler)
    receiver = WebhookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


_ADOPTED = re.compile(r"^leadrelay_broker_epochs_adopted_total (\S+)$", re.MULTILINE)


@dataclass
class RunningSystem:
    services: dict[str, ServiceProcess]
    """The first instance of each service, by service name."""
    database_urls: dict[str, str]
    admin_token: str = ""
    instances: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    """Every instance of each service (the first is `services[name]`)."""

    @property
    def admin_headers(self) -> dict[str, str]:
        """What every service's admin routes need (and ingest's lead posts take)."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def url(self, name: str) -> str:
        return self.services[name].url

    def restart(self, name: str) -> None:
        self.services[name].start()
        wait_until_ready([self.services[name]])

    def every_process(self) -> list[ServiceProcess]:
        return [process for processes in self.instances.values() for process in processes]

    def adopted_broker_epochs(self) -> dict[str, float]:
        """How many broker epochs each service has adopted (`/metrics`): one more than before
        a broker restart once the service has recovered from it (`shared.broker_recovery`).
        The scorer's `signals` process publishes nothing, so it adopts none: not counted."""
        counts: dict[str, float] = {}
        for name, service in self.services.items():
            if service.service:
                continue
            found = _ADOPTED.search(httpx.get(f"{service.url}/metrics", timeout=5).text)
            counts[name] = float(found.group(1)) if found else 0.0
        return counts


@contextmanager
def running_system(
    *, bootstrap_servers: str, data_dir: Path, topic_prefix: str, sla_seconds: float,
    database_url: str | None = None, allowed_webhook_urls: Sequence[str] = (),
    broker_env: Mapping[str, str] | None = None, instances: int | Mapping[str, int] = 1,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[RunningSystem]:
    """Migrate and start ingest, scorer and router; stop them all at the end. Webhooks may
    call `allowed_webhook_urls` (the local receiver's URL) besides public addresses.
    `instances` processes of each service (or per service name) share its database and
    consumer group.

    `broker_env` is the services' broker settings (security, idempotence, replication, fetch
    wait) beyond the bootstrap servers; by default those suited to the embedded broker.
    `extra_env` adds or overrides any other setting (tracing, log level).
    The scorer runs as two processes, `scorer` (new leads, buying signals, assignments) and
    `scorer-signals` (the campaigns' signals), as `leadrelay up` runs it.
    """
    counts = instances if isinstance(instances, Mapping) else dict.fromkeys(SERVICES, instances)
    instance_ports = {name: [free_port() for _ in range(counts.get(name, 1))]
                      for name in SERVICES}
    ports = {name: each[0] for name, each in instance_ports.items()}
    urls = {
        name: database_url or f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}" for name in SERVICES
    }
    for name, url in urls.items():
        spec = SERVICES[name]
        upgrade(spec.migrations_dir, url, spec.version_table)
    processes: dict[str, list[ServiceProcess]] = {}
    admin_token = secrets.token_urlsafe(24)
    encryption_key = Fernet.generate_key().decode()
    for name in SERVICES:
        env = {
            "LEADRELAY_DATA_DIR": str(data_dir),
            "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "LEADRELAY_KAFKA_TOPIC_PREFIX": topic_prefix,
            "LEADRELAY_SLA_ACCEPT_SECONDS": str(sla_seconds),
            "LEADRELAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['router']}",
            "LEADRELAY_WEBHOOK_ALLOWED_URLS": ",".join(allowed_webhook_urls),
            "LEADRELAY_ENCRYPTION_KEYS": encryption_key,
            "LEADRELAY_ADMIN_TOKEN": admin_token,
            "LEADRELAY_LEAD_KEYS_URL": ",".join(
                f"http://127.0.0.1:{port}" for port in instance_ports["ingest"]),
            "LEADRELAY_SCORER_URL": f"http://127.0.0.1:{ports['scorer']}",
            "LEADRELAY_SLA_REMINDER_FRACTION": "0",
            f"LEADRELAY_{name.upper()}_DATABASE_URL": urls[name],
            "LEADRELAY_LOG_LEVEL": "INFO",
            **(embedded_consumer_env() if broker_env is None else broker_env),
            **(extra_env or {}),
        }
        processes[name] = [
            ServiceProcess(name, port, env,
                           data_dir / "logs" / f"{name}{'' if number == 1 else number}.log")
            for number, port in enumerate(instance_ports[name], start=1)
        ]
    processes["scorer-signals"] = [
        scorer_signals_beside(process, free_port(), data_dir / "logs" / f"{process.name}"
                              f"-signals{'' if number == 1 else number}.log")
        for number, process in enumerate(processes["scorer"], start=1)]
    system = RunningSystem({name: each[0] for name, each in processes.items()}, urls,
                           admin_token, processes)
    try:
        for service in system.every_process():
            service.start()
        wait_until_ready(system.every_process())
        yield system
    finally:
        for service in system.every_process():
            service.stop()
