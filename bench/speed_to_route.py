"""Speed to route: time from ingest's 202 to the SDR notification arriving at a local receiver.

Starts its own system (the embedded broker, the three services as processes, SQLite files or a
throwaway PostgreSQL database), sends leads at a fixed rate, and prints p50, p90, p99, max and
how many leads never arrived, then request -> webhook (what the form's sender waits, its
request included) and the same figures per hop: request -> ingest's 202 (as this process
sees it), request and 202 -> scored (the `lead.scored` event's time; negative
when the 202 reached this process after the lead was scored), scored -> assigned (the
offer's time in router's database), assigned -> notified (the webhook arriving at the
receiver), and each service's share of 202 -> assigned, read from the records' timestamps on
the broker (until ingest's relay sends `lead.received`, until the scorer decides, until its relay
sends `lead.scored`, until the router offers). All hops use the wall clock of this one machine.

    python bench/speed_to_route.py                      # SQLite, 100 leads/s for 30 s
    python bench/speed_to_route.py --database postgres  # PostgreSQL on 127.0.0.1:5432
    python bench/speed_to_route.py --rate 50 --seconds 10
    python bench/speed_to_route.py --seconds 300        # also prints each 30-s window
    python bench/speed_to_route.py --broker kafka3 --database postgres   # the production path

`--broker kafka` runs Apache Kafka (one broker) instead of the embedded broker, `kafka3` a
3-broker cluster with replication 3 and two replicas in sync (`leadrelay/harness/kafka.py`);
either way with idempotent producers and Kafka's fetch wait.

A run longer than one window also prints 202 -> webhook per window of sending time, so a
system that slows down as it runs (a broker whose fetches cost more as its log grows) shows.

CPU per routed lead: before the load, each process's CPU is read over `--idle-seconds` with
nothing to do; the figure printed as "net" is the CPU used while the load ran less that idle
rate over the same time, divided by the leads notified (what a lead costs, not the polling
between leads). `--profile DIR` records each service with py-spy (raw stacks) during the load.

    python bench/speed_to_route.py --rate 250 --seconds 30 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_seconds, machine_ticks
from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.harness.kafka import KafkaCluster
from leadrelay.local_system import (
    RunningSystem,
    WebhookReceiver,
    running_system,
    webhook_receiver,
)
from services.router.models import assignment, notification, notification_attempt
from shared.db import Database


class KeepAliveClient:
    """A minimal HTTP/1.1 client over a pool of keep-alive connections, for the load only.

    httpx costs about 4 ms of CPU per request, close to half a core at 100 leads/s on a
    2-core machine that also runs the system being measured; this costs a fraction of that."""

    def __init__(self, url: str, size: int, token: str) -> None:
        address = urlsplit(url)
        self.authorization = f"Authorization: Bearer {token}\r\n"
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        """(when it was last used, reader, writer), the most recently used last."""
        self.free = asyncio.Semaphore(size)

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # uvicorn closes a connection idle for 5 s: one idle for 4 s is not worth the race.
        while self.idle:
            used_at, reader, writer = self.idle.pop()
            if time.monotonic() - used_at < 4.0:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def post_json(self, path: str, document: object) -> tuple[int, bytes]:
        body = json.dumps(document).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.authorization}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        async with self.free:
            reader, writer = await self._connection()
            try:
                writer.write(head.encode() + body)
                headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                status = int(headers.split(" ", 2)[1])
                length = next((int(line.split(":", 1)[1]) for line in headers.split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                answer = await reader.readexactly(length)
            except BaseException:
                writer.close()
                raise
            self.idle.append((time.monotonic(), reader, writer))
            return status, answer

    def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()


async def send_at_rate(
    ingest_url: str, token: str, rate: float, seconds: float, accepted_at: dict[str, float],
    failures: list[str] | None = None, sent_at: dict[str, float] | None = None,
) -> int:
    """Send `rate` leads per second for `seconds`; `accepted_at`: lead id -> wall-clock time
    of ingest's 202 (`sent_at`: of the request). Requests that fail are counted in
    `failures`, not retried."""
    total = int(rate * seconds)
    interval = 1.0 / rate
    run = uuid.uuid4().hex[:6]
    client = KeepAliveClient(ingest_url, size=64, token=token)

    async def one(number: int) -> None:
        sent = time.time()
        try:
            status, answer = await client.post_json("/v1/leads", {
                "email": f"bench{run}.{number}@speed.example", "name": f"Lead {number}",
                "company": "Speed Inc", "demo_requested": True,
            })
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            if failures is not None:
                failures.append(type(error).__name__)
            return
        if status == 202:
            accepted_at[json.loads(answer)["lead_id"]] = time.time()
            if sent_at is not None:
                sent_at[json.loads(answer)["lead_id"]] = sent
        elif failures is not None:
            failures.append(f"HTTP {status}")

    started = time.monotonic()
    tasks = []
    for number in range(total):
        delay = started + number * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    client.close()
    return total


def generate_load(
    ingest_url: str, token: str, rate: float, seconds: float
) -> tuple[int, dict[str, float], list[str], dict[str, float], float]:
    """`send_at_rate` in a process of its own: (total, accepted_at, failures, sent_at, the CPU
    seconds this process used)."""
    cpu_at_start = time.process_time()
    accepted_at: dict[str, float] = {}
    failures: list[str] = []
    sent_at: dict[str, float] = {}
    total = asyncio.run(send_at_rate(ingest_url, token, rate, seconds, accepted_at, failures,
                                     sent_at))
    return total, accepted_at, failures, sent_at, time.process_time() - cpu_at_start


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wall(monotonic: float) -> float:
    """A `time.monotonic()` reading of this process as wall-clock time."""
    return monotonic + (time.time() - time.monotonic())


FIRST_OFFERS = (select(assignment.c.lead_id, assignment.c.scored_at, assignment.c.offered_at)
                .where(assignment.c.attempt == 1))
"""Each lead's first offer: when the scorer scored the lead, when the router offered it."""


async def hops(database_url: str, accepted_at: dict[str, float], arrived_at: dict[str, float],
               sent_at: dict[str, float]) -> dict[str, list[float]]:
    """Per-hop latencies (ms) of the leads that arrived, from router's assignments."""
    db = Database(database_url)
    try:
        async with db.reading() as session:
            rows = (await session.execute(FIRST_OFFERS)).all()
            attempts = (await session.execute(
                select(assignment.c.lead_id, assignment.c.offered_at,
                       notification_attempt.c.attempted_at, notification_attempt.c.duration_ms)
                .join(notification, notification.c.assignment_id == assignment.c.id)
                .join(notification_attempt,
                      notification_attempt.c.notification_id == notification.c.id)
                .where(assignment.c.attempt == 1, notification.c.kind == "offer",
                       notification_attempt.c.attempt == 1)
            )).all()
    finally:
        await db.dispose()
    found: dict[str, list[float]] = {
        "request -> 202": [], "request -> scored": [], "202 -> scored": [],
        "scored -> assigned": [], "assigned -> notified": []}
    for lead_id, scored_at, offered_at in rows:
        if lead_id not in accepted_at or lead_id not in arrived_at or scored_at is None:
            continue
        found["request -> 202"].append((accepted_at[lead_id] - sent_at[lead_id]) * 1000)
        found["request -> scored"].append((scored_at.timestamp() - sent_at[lead_id]) * 1000)
        found["202 -> scored"].append((scored_at.timestamp() - accepted_at[lead_id]) * 1000)
        found["scored -> assigned"].append((offered_at - scored_at).total_seconds() * 1000)
        found["assigned -> notified"].append(
            (wall(arrived_at[lead_id]) - offered_at.timestamp()) * 1000)
    found["  assigned -> POST"] = []
    found["  POST round trip"] = []
    for lead_id, offered_at, attempted_at, duration_ms in attempts:
        if lead_id in arrived_at:
            found["  assigned -> POST"].append(
                (attempted_at - offered_at).total_seconds() * 1000)
            found["  POST round trip"].append(float(duration_ms))
    return found


async def handed_to_broker(bootstrap_servers: str, topic: str,
                           event_type: str) -> dict[str, float]:
    """When each lead's first `event_type` on `topic` was handed to the producer (the record's
    timestamp, epoch seconds), read from the topic's beginning without a consumer group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # without a group, every partition once the metadata came
        partitions = sorted(consumer.assignment())
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        found: dict[str, float] = {}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if (record.key is not None
                            and ("event_type", event_type.encode()) in record.headers):
                        found.setdefault(record.key.decode(), record.timestamp / 1000)
        return found
    finally:
        # aiokafka's coordinator without a group may await a task it cancelled before it
        # ran (seen on Apache Kafka): that CancelledError is its own, not this task's.
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


async def broker_hops(bootstrap_servers: str, prefix: str, database_url: str,
                      accepted_at: dict[str, float]) -> dict[str, list[float]]:
    """Each service's share of 202 -> assigned (ms): ingest until its relay hands `lead.received`
    to the producer, the scorer until it decides, its relay until it hands `lead.scored` on, the
    router until it offers."""
    received = await handed_to_broker(bootstrap_servers, f"{prefix}.leads", "lead.received")
    scored_sent = await handed_to_broker(bootstrap_servers, f"{prefix}.scores", "lead.scored")
    db = Database(database_url)
    try:
        async with db.reading() as session:
            rows = (await session.execute(FIRST_OFFERS)).all()
    finally:
        await db.dispose()
    found: dict[str, list[float]] = {"202 -> ingest sent": [], "ingest sent -> scored": [],
                                     "scored -> scorer sent": [], "scorer sent -> assigned": []}
    for lead_id, scored_at, offered_at in rows:
        if lead_id not in accepted_at or lead_id not in received or lead_id not in scored_sent:
            continue
        steps = [accepted_at[lead_id], received[lead_id], scored_at.timestamp(),
                 scored_sent[lead_id], offered_at.timestamp()]
        for hop, start, end in zip(found.values(), steps, steps[1:], strict=False):
            hop.append((end - start) * 1000)
    return found


async def measure(system: RunningSystem, receiver: WebhookReceiver, args: argparse.Namespace,
                  cpu: CpuUse, bootstrap_servers: str,
                  ) -> tuple[int, dict[str, float], dict[str, float], list[str],
                             dict[str, list[float]]]:
    async with httpx.AsyncClient(headers=system.admin_headers) as client:
        for number in range(args.sdrs):
            (await client.post(f"{system.url('router')}/v1/sdrs", json={
                "name": f"Rep {number}", "email": f"rep{number}@bench.example",
                "webhook_url": receiver.new_endpoint(),
            })).raise_for_status()
    await asyncio.sleep(1.0)
    await cpu.measure_idle(getattr(args, "idle_seconds", 0.0))
    profilers = start_profilers(getattr(args, "profile", None), cpu.pids, args.seconds)
    # The load comes from a process of its own: in this one, the receiver's thread would
    # compete with it for the GIL, and the 202s would be read late.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        cpu.start()
        harness_at_start = time.process_time()
        total, accepted_at, failures, sent_at, load_cpu = (
            await asyncio.get_running_loop().run_in_executor(
                pool, generate_load, system.url("ingest"), system.admin_token, args.rate,
                args.seconds))
        cpu.used_by_harness = load_cpu + time.process_time() - harness_at_start
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline and not set(accepted_at) <= set(receiver.arrived_at):
        await asyncio.sleep(0.1)
    cpu.stop()  # once the last lead arrived: the work of a backlog counts too
    for profiler in profilers:
        profiler.wait()
    with receiver.lock:
        arrived_at = dict(receiver.arrived_at)
    latencies = {
        lead: (wall(arrived_at[lead]) - accepted) * 1000
        for lead, accepted in accepted_at.items()
        if lead in arrived_at
    }
    per_hop = {"request -> webhook": [(wall(arrived_at[lead]) - sent_at[lead]) * 1000
                                      for lead in accepted_at if lead in arrived_at]}
    per_hop |= await hops(system.database_urls["router"], accepted_at, arrived_at, sent_at)
    per_hop |= await broker_hops(bootstrap_servers, "bench", system.database_urls["router"],
                                 accepted_at)
    return total, accepted_at, latencies, failures, per_hop


@dataclass
class CpuUse:
    """CPU used by each process of the system and by the machine while the load ran (Linux)."""

    pids: dict[str, int]
    started: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    machine: tuple[int, int] = (0, 0)
    busy_fraction: float | None = None
    used_by_harness: float = 0.0
    idle_rate: dict[str, float] = field(default_factory=dict)
    """CPU seconds per second of each process with nothing to do (`measure_idle`)."""
    seconds: float = 0.0
    _at: float = 0.0

    async def measure_idle(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(OSError):
            before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            await asyncio.sleep(seconds)
            self.idle_rate = {name: (cpu_seconds(pid) - before[name]) / seconds
                              for name, pid in self.pids.items()}

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            self.machine = machine_ticks()
            self._at = time.monotonic()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.used = {name: cpu_seconds(self.pids[name]) - before
                         for name, before in self.started.items()}
            self.seconds = time.monotonic() - self._at
            busy, total = machine_ticks()
            if self.started and total > self.machine[1]:
                self.busy_fraction = (busy - self.machine[0]) / (total - self.machine[1])

    def report(self, leads: int) -> str:
        if not self.used or leads == 0:
            return "  CPU: not measured (needs Linux's /proc)"
        each = "   ".join(f"{name} {seconds * 1000 / leads:.1f}"
                           for name, seconds in sorted(self.used.items(), key=lambda x: -x[1]))
        busy = ("" if self.busy_fraction is None else
                f"; the {os.cpu_count()} cores were {self.busy_fraction:.0%} busy")
        harness = self.used_by_harness * 1000 / leads
        text = (f"  CPU ms per lead while the load ran: {each}{busy}\n"
                f"  (this benchmark's own load and receiver: {harness:.1f} ms per lead)")
        if self.idle_rate:
            net = {name: (seconds - self.idle_rate.get(name, 0.0) * self.seconds) * 1000 / leads
                   for name, seconds in self.used.items()}
            idle = sum(self.idle_rate.values())
            text += ("\n  CPU ms per routed lead, net of idle: " + "   ".join(
                f"{name} {net[name]:.2f}" for name in sorted(net)) +
                f"   all {sum(net.values()):.2f}\n"
                f"  idle before the load: {idle:.1%} of one core (" + ", ".join(
                    f"{name} {rate:.1%}" for name, rate in sorted(self.idle_rate.items())) + ")")
        return text


def start_profilers(out: str | None, pids: dict[str, int],
                    seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each service (not the broker) for `seconds`, raw stacks in `out`."""
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    return [subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
         "--format", "raw", "--output", str(Path(out) / f"{name}.txt"), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items() if name in ("ingest", "scorer", "router")]


def figures(values: list[float]) -> str:
    if not values:
        return "no data"
    return (f"p50 {percentile(values, 0.50):7.1f} ms   p90 {percentile(values, 0.90):7.1f} ms"
            f"   p99 {percentile(values, 0.99):7.1f} ms   max {max(values):7.1f} ms"
            f"   mean {statistics.fmean(values):7.1f} ms")


def by_window(accepted_at: dict[str, float], latencies: dict[str, float], window: float,
              seconds: float) -> list[tuple[float, list[float]]]:
    """202 -> webhook latencies grouped by when ingest accepted the lead, per `window` s of
    the `seconds` of sending (the stragglers of the last instant count in the last window)."""
    if not accepted_at:
        return []
    start = min(accepted_at.values())
    last = max(0, int(seconds // window) - 1)
    windows: dict[int, list[float]] = {}
    for lead, latency in latencies.items():
        index = min(last, int((accepted_at[lead] - start) // window))
        windows.setdefault(index, []).append(latency)
    return [(index * window, windows[index]) for index in sorted(windows)]


def start_broker(stack: ExitStack, kind: str) -> tuple[str, dict[str, str] | None, dict[str, int]]:
    """Start the broker `kind` names: its bootstrap servers, the services' broker settings
    (None: the embedded broker's) and its processes' ids."""
    if kind == "embedded":
        broker = stack.enter_context(EmbeddedBroker(free_port()))
        assert broker.process is not None
        return broker.bootstrap_servers, None, {"broker": broker.process.pid}
    cluster = stack.enter_context(KafkaCluster(3 if kind == "kafka3" else 1))
    env = cluster.service_env()
    pids = {f"kafka-{broker.node_id}": broker.process.pid for broker in cluster.brokers
            if broker.process is not None}
    return cluster.bootstrap_servers, env, pids


def run(database: str, args: argparse.Namespace) -> None:
    """Start a system on `database` (sqlite or postgres), measure, print the figures."""
    database_name = asyncio.run(create_database()) if database == "postgres" else None
    try:
        with ExitStack() as stack:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            bootstrap_servers, broker_env, broker_pids = start_broker(stack, args.broker)
            receiver = stack.enter_context(webhook_receiver())
            system = stack.enter_context(running_system(
                bootstrap_servers=bootstrap_servers, data_dir=data_dir,
                topic_prefix="bench", sla_seconds=3600,
                database_url=pg_url(database_name) if database_name else None,
                allowed_webhook_urls=[receiver.base_url],
                broker_env=broker_env,
            ))
            pids = {name: service.process.pid for name, service in system.services.items()
                    if service.process is not None}
            pids.update(broker_pids)
            cpu = CpuUse(pids)
            total, accepted_at, latencies, failures, per_hop = asyncio.run(
                measure(system, receiver, args, cpu, bootstrap_servers))
    finally:
        if database_name:
            asyncio.run(drop_database(database_name))

    missing = len(accepted_at) - len(latencies)
    print(f"speed to route, {args.broker} broker, {database}: {total} leads "
          f"at {args.rate:g}/s for {args.seconds:g} s")
    print(f"  accepted by ingest: {len(accepted_at)}   refused or failed: {len(failures)}   "
          f"notified: {len(latencies)}   never arrived: {missing}")
    if failures:
        print(f"  refusals and failures: {dict(Counter(failures))}")
    print(f"  202 -> webhook         {figures(list(latencies.values()))}")
    for hop, values in per_hop.items():
        print(f"  {hop:<22} {figures(values)}")
    print(cpu.report(len(latencies)))
    windows = by_window(accepted_at, latencies, args.window, args.seconds)
    if len(windows) > 1:
        print(f"  202 -> webhook by {args.window:g}-s window of sending time:")
        for start, values in windows:
            print(f"    {start:5.0f} s  {figures(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="leads per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--broker", choices=["embedded", "kafka", "kafka3"], default="embedded")
    parser.add_argument("--sdrs", type=int, default=20)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds per window in the per-window figures")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="idle CPU read before the load, subtracted in the net figure")
    parser.add_argument("--profile", help="directory for py-spy profiles of the load")
    run(parser.parse_args().database, parser.parse_args())


if __name__ == "__main__":
    main()
