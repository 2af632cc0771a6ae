"""Signal storm: a campaign's email opens by the thousand while hot leads must still reach an SDR.

Starts its own system (as `speed_to_route.py` does), creates `--cold` cold leads, then runs
the same phases twice, storm off and storm on, and prints the figures side by side:

- hot leads (a demo request each) at `--hot-rate` for `--seconds`: ingest's 202 -> the SDR's
  webhook, p50/p90/p99/max;
- storm on: `POST /v1/signals/batch` with `--batch` `email_open` signals of the cold leads,
  aimed at `--signal-rate` per second (at most `--in-flight` requests at once): the signals
  ingest accepted per second, the signals the scorer applied per second while behind, and the
  time it needed after the storm's last 202 to have applied them all;
- once the storm is over: a `demo_request` signal for each of `--probes` cold leads, 202 ->
  the SDR's webhook (the signal's effect: a hot lead routed) and 202 -> its score visible in
  the scorer's API;
- CPU ms per routed lead (storm off) and per signal (storm on) of each process, and the CPU
  of the whole idle system, in % of one core.

    python bench/signal_storm.py                          # embedded broker, SQLite
    python bench/signal_storm.py --seconds 15             # shorter
    python bench/signal_storm.py --broker kafka --database postgres
    python bench/signal_storm.py --profile DIR   # py-spy (pip install py-spy) of each service

Latencies depend on what else the machine runs; CPU per event is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_seconds
from bench.speed_to_route import (
    KeepAliveClient,
    broker_hops,
    figures,
    generate_load,
    hops,
    start_broker,
    wall,
)
from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.broker import embedded_consumer_env
from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from services.ingest.models import OUTBOX as INGEST_OUTBOX
from services.scorer.models import signal as scorer_signal
from shared.db import Database

COLD_EMAIL = "cold{run}.{number}@storm.example"


@dataclass
class StormResult:
    """What the storm sender saw: signals accepted, and when the first and last 202 came."""

    sent: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def rate(self) -> float:
        span = self.last_at - self.first_at
        return self.accepted / span if span > 0 else 0.0


def send_storm(ingest_url: str, token: str, run: str, cold: int, rate: float, seconds: float,
               batch: int, in_flight: int) -> StormResult:
    """Signal batches at `rate` signals/s for `seconds`, in a process of its own."""
    return asyncio.run(_storm(ingest_url, token, run, cold, rate, seconds, batch, in_flight))


async def _storm(ingest_url: str, token: str, run: str, cold: int, rate: float, seconds: float,
                 batch: int, in_flight: int) -> StormResult:
    client = KeepAliveClient(ingest_url, size=in_flight, token=token)
    result = StormResult()
    batches = max(1, int(rate * seconds / batch))
    interval = batch / rate
    gate = asyncio.Semaphore(in_flight)
    now = datetime.now(UTC).isoformat()

    async def one(number: int) -> None:
        signals = [{
            "email": COLD_EMAIL.format(run=run, number=(number * batch + place) % cold),
            "type": "email_open", "signal_id": f"storm-{run}-{number}-{place}",
            "occurred_at": now, "properties": {"campaign": "storm"},
        } for place in range(batch)]
        try:
            status, _ = await client.post_json("/v1/signals/batch", {"signals": signals})
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            result.refused[type(error).__name__] = result.refused.get(type(error).__name__, 0) + 1
            return
        finally:
            gate.release()
        if status == 202:
            result.accepted += batch
            result.last_at = time.time()
            result.first_at = result.first_at or started_wall
        else:
            result.refused[f"HTTP {status}"] = result.refused.get(f"HTTP {status}", 0) + 1

    started = time.monotonic()
    started_wall = time.time()
    tasks = []
    for number in range(batches):
        delay = started + number * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        result.sent += batch
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    client.close()
    return result


class Cpu:
    """CPU seconds of each process between `start` and `stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.seconds = 0.0
        self._at = 0.0

    def start(self) -> None:
        self.started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._at = time.monotonic()

    def stop(self) -> None:
        self.used = {name: cpu_seconds(pid) - self.started[name]
                     for name, pid in self.pids.items()}
        self.seconds = time.monotonic() - self._at

    def per_event(self, events: int) -> dict[str, float]:
        return {name: used * 1000 / events for name, used in self.used.items()} if events else {}

    def core_share(self) -> float:
        return sum(self.used.values()) / self.seconds if self.seconds else 0.0


@dataclass
class Phase:
    """One column of the report."""

    name: str
    hot: list[float] = field(default_factory=list)
    hot_hops: dict[str, list[float]] = field(default_factory=dict)
    hot_sent: int = 0
    hot_routed: int = 0
    storm: StormResult | None = None
    applied_rate: float | None = None
    catch_up: float | None = None
    ingest_backlog: int = 0
    ingest_relay_lag: int = 0
    probe_routed: list[float] = field(default_factory=list)
    probe_scored: list[float] = field(default_factory=list)
    cpu_per_lead: dict[str, float] = field(default_factory=dict)
    cpu_per_signal: dict[str, float] = field(default_factory=dict)


async def applied_signals(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.reading() as session:
            return int(await session.scalar(
                select(func.count()).select_from(scorer_signal)) or 0)
    finally:
        await db.dispose()


async def outbox_backlog(database_url: str) -> int:
    """Events ingest has not marked published yet (marking runs 0.1 s behind publishing)."""
    events = INGEST_OUTBOX.events
    db = Database(database_url)
    try:
        async with db.reading() as session:
            return int(await session.scalar(select(func.count()).select_from(events).where(
                events.c.published_at.is_(None))) or 0)
    finally:
        await db.dispose()


async def relay_lag(system: RunningSystem, database_url: str) -> int:
    """Events ingest wrote and its relay has not sent yet (its outbox rows less its
    `events_published_total`; both count from the start, nothing is purged within a run)."""
    async with httpx.AsyncClient(headers=system.admin_headers, timeout=10) as client:
        metrics = (await client.get(f"{system.url('ingest')}/metrics")).text
    published = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("leadrelay_events_published_total{"))
    events = INGEST_OUTBOX.events
    db = Database(database_url)
    try:
        async with db.reading() as session:
            written = int(await session.scalar(select(func.count()).select_from(events)) or 0)
    finally:
        await db.dispose()
    return max(0, written - int(published))


async def create_cold_leads(system: RunningSystem, run: str, count: int) -> dict[str, str]:
    """Leads no rule finds hot: email -> lead id."""
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(headers=system.admin_headers, timeout=60) as client:
        for first in range(0, count, 500):
            items = [{"email": COLD_EMAIL.format(run=run, number=number), "source": "campaign"}
                     for number in range(first, min(count, first + 500))]
            answer = await client.post(f"{system.url('ingest')}/v1/leads/batch",
                                       json={"leads": items})
            answer.raise_for_status()
            for item, result in zip(items, answer.json()["results"], strict=True):
                ids[item["email"]] = result["lead_id"]
    return ids


async def probe(system: RunningSystem, receiver: WebhookReceiver, lead_ids: list[str],
                rate: float, phase: Phase) -> None:
    """A demo request for each lead at `rate`: 202 -> webhook and 202 -> score visible (the
    scorer's API says hot), each lead polled every 20 ms from its 202 on."""
    accepted: dict[str, float] = {}
    scored: dict[str, float] = {}
    async with httpx.AsyncClient(headers=system.admin_headers, timeout=30) as client:

        async def one(lead_id: str) -> None:
            answer = await client.post(f"{system.url('ingest')}/v1/signals", json={
                "lead_id": lead_id, "type": "demo_request",
                "signal_id": f"probe-{uuid.uuid4().hex}"})
            if answer.status_code != 202:
                return
            accepted[lead_id] = time.time()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                score = await client.get(f"{system.url('scorer')}/v1/leads/{lead_id}/score")
                if score.status_code == 200 and score.json()["temperature"] == "hot":
                    scored[lead_id] = time.time()
                    return
                await asyncio.sleep(0.02)

        tasks = []
        for lead_id in lead_ids:
            tasks.append(asyncio.create_task(one(lead_id)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(accepted) <= set(receiver.arrived_at):
        await asyncio.sleep(0.05)
    with receiver.lock:
        arrived = dict(receiver.arrived_at)
    phase.probe_routed = [(wall(arrived[lead]) - at) * 1000 for lead, at in accepted.items()
                          if lead in arrived]
    phase.probe_scored = [(scored[lead] - at) * 1000 for lead, at in accepted.items()
                          if lead in scored]


async def run_phase(system: RunningSystem, receiver: WebhookReceiver, args: argparse.Namespace,
                    pids: dict[str, int], run: str, cold_ids: list[str], storm_on: bool) -> Phase:
    phase = Phase("storm on" if storm_on else "storm off")
    spawn = multiprocessing.get_context("spawn")
    cpu = Cpu(pids)
    before = await applied_signals(system.database_urls["scorer"])
    profilers = start_profilers(args, pids) if storm_on and args.profile else []
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        loop = asyncio.get_running_loop()
        cpu.start()
        hot = loop.run_in_executor(pool, generate_load, system.url("ingest"),
                                   system.admin_token, args.hot_rate, args.seconds)
        storm = (loop.run_in_executor(pool, send_storm, system.url("ingest"),
                                      system.admin_token, run, args.cold, args.signal_rate,
                                      args.seconds, args.batch, args.in_flight)
                 if storm_on else None)
        samples: list[tuple[float, int]] = []
        while not hot.done() or (storm is not None and not storm.done()):
            samples.append((time.time(), await applied_signals(system.database_urls["scorer"])))
            phase.ingest_backlog = max(phase.ingest_backlog,
                                       await outbox_backlog(system.database_urls["ingest"]))
            phase.ingest_relay_lag = max(phase.ingest_relay_lag, await relay_lag(
                system, system.database_urls["ingest"]))
            await asyncio.sleep(0.5)
        total, accepted_at, _failures, sent_at, _ = await hot
        phase.storm = await storm if storm is not None else None
    if phase.storm is not None:
        expected = before + phase.storm.accepted
        deadline = time.monotonic() + 120
        applied = await applied_signals(system.database_urls["scorer"])
        while applied < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            applied = await applied_signals(system.database_urls["scorer"])
            samples.append((time.time(), applied))
        done_at = next((at for at, count in samples if count >= expected), time.time())
        phase.catch_up = max(0.0, done_at - phase.storm.last_at)
        start_at, start_count = samples[0]
        phase.applied_rate = (min(applied, expected) - start_count) / max(
            1e-9, done_at - start_at)
    for profiler in profilers:
        profiler.wait()
    drain = time.monotonic() + 30
    while time.monotonic() < drain and not set(accepted_at) <= set(receiver.arrived_at):
        await asyncio.sleep(0.1)
    cpu.stop()
    with receiver.lock:
        arrived = dict(receiver.arrived_at)
    phase.hot_sent = total
    phase.hot = [(wall(arrived[lead]) - at) * 1000 for lead, at in accepted_at.items()
                 if lead in arrived]
    phase.hot_routed = len(phase.hot)
    phase.hot_hops = await hops(system.database_urls["router"], accepted_at, arrived, sent_at)
    phase.hot_hops |= await broker_hops(args.bootstrap_servers, "storm",
                                        system.database_urls["router"], accepted_at)
    phase.cpu_per_lead = cpu.per_event(phase.hot_routed)
    if phase.storm is not None:
        phase.cpu_per_signal = cpu.per_event(phase.storm.accepted)
    offset = args.probes if storm_on else 0
    await probe(system, receiver, cold_ids[offset:offset + args.probes], args.hot_rate, phase)
    return phase


def start_profilers(args: argparse.Namespace, pids: dict[str, int]) -> list[Any]:
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    return [subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
         "--rate", "50", "--format", "raw", "--output", str(out / f"{name}.txt"),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items() if name != "broker" and not name.startswith("kafka")]


async def idle_cpu(pids: dict[str, int], seconds: float) -> Cpu:
    cpu = Cpu(pids)
    cpu.start()
    await asyncio.sleep(seconds)
    cpu.stop()
    return cpu


async def bench(system: RunningSystem, receiver: WebhookReceiver, args: argparse.Namespace,
                pids: dict[str, int]) -> tuple[list[Phase], Cpu]:
    async with httpx.AsyncClient(headers=system.admin_headers) as client:
        for number in range(args.sdrs):
            (await client.post(f"{system.url('router')}/v1/sdrs", json={
                "name": f"Rep {number}", "email": f"rep{number}@storm.example",
                "webhook_url": receiver.new_endpoint(),
            })).raise_for_status()
    run = uuid.uuid4().hex[:6]
    cold = await create_cold_leads(system, run, args.cold)
    await asyncio.sleep(5.0)  # the cold leads scored and sent to nurture
    idle = await idle_cpu(pids, args.idle_seconds)
    phases = [await run_phase(system, receiver, args, pids, run, list(cold.values()), on)
              for on in (False, True)]
    return phases, idle


def report(args: argparse.Namespace, phases: list[Phase], idle: Cpu, database: str) -> None:
    def row(label: str, values: list[str]) -> None:
        print(f"  {label:<34}" + "".join(f"{value:>34}" for value in values))

    def pct(values: list[float]) -> str:
        if not values:
            return "no data"
        ordered = sorted(values)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

        return f"{at(0.5):.0f} / {at(0.99):.0f} / {ordered[-1]:.0f} ms"

    print(f"signal storm, {args.broker} broker, {database}: hot leads {args.hot_rate:g}/s for "
          f"{args.seconds:g} s; storm {args.signal_rate:g} signals/s in batches of {args.batch} "
          f"over {args.cold} cold leads")
    row("", [phase.name for phase in phases])
    row("hot leads routed / sent", [f"{p.hot_routed} / {p.hot_sent}" for p in phases])
    row("hot 202 -> webhook p50/p99/max", [pct(p.hot) for p in phases])
    row("  (p90)", [figures(p.hot).split("   ")[1].strip() if p.hot else "-" for p in phases])
    for hop in ("202 -> scored", "  202 -> ingest sent", "  ingest sent -> scored",
                "scored -> assigned", "  scored -> scorer sent", "  scorer sent -> assigned",
                "assigned -> notified"):
        row(f"  hot {hop}", [pct(p.hot_hops.get(hop.strip(), [])) for p in phases])
    row("ingest signals/s accepted", [
        "-" if p.storm is None else f"{p.storm.rate:,.0f} ({p.storm.accepted:,} of "
        f"{p.storm.sent:,})" for p in phases])
    row("  refused or failed", ["-" if p.storm is None else str(p.storm.refused or 0)
                                for p in phases])
    row("ingest outbox not marked (max)", [f"{p.ingest_backlog:,}" for p in phases])
    row("ingest outbox not sent (max)", [f"{p.ingest_relay_lag:,}" for p in phases])
    row("scorer signals/s applied", [
        "-" if p.applied_rate is None else f"{p.applied_rate:,.0f}" for p in phases])
    row("scorer catch-up after the storm", [
        "-" if p.catch_up is None else f"{p.catch_up:.1f} s" for p in phases])
    row("after: demo signal 202 -> webhook", [pct(p.probe_routed) for p in phases])
    row("after: demo signal 202 -> score", [pct(p.probe_scored) for p in phases])
    names = sorted(phases[0].cpu_per_lead)
    for name in names:
        row(f"CPU ms per routed lead: {name}", [f"{p.cpu_per_lead.get(name, 0):.1f}"
                                                 for p in phases])
    row("CPU ms per routed lead: all", [f"{sum(p.cpu_per_lead.values()):.1f}" for p in phases])
    for name in names:
        row(f"CPU ms per signal: {name}", [
            f"{p.cpu_per_signal[name]:.2f}" if p.cpu_per_signal else "-" for p in phases])
    row("CPU ms per signal: all", [
        f"{sum(p.cpu_per_signal.values()):.2f}" if p.cpu_per_signal else "-" for p in phases])
    shares = ", ".join(f"{name} {used / idle.seconds:.1%}" for name, used in idle.used.items())
    print(f"  idle system: {idle.core_share():.1%} of one core ({shares})")
    print("  (CPU per routed lead at a low rate includes the idle cost of the time between leads)")


def run(args: argparse.Namespace) -> None:
    database = args.database
    database_name = asyncio.run(create_database()) if database == "postgres" else None
    try:
        with ExitStack() as stack:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            bootstrap_servers, broker_env, broker_pids = start_broker(stack, args.broker)
            args.bootstrap_servers = bootstrap_servers
            if args.env:
                broker_env = {**(embedded_consumer_env() if broker_env is None else broker_env),
                              **dict(item.split("=", 1) for item in args.env)}
            receiver = stack.enter_context(webhook_receiver())
            system = stack.enter_context(running_system(
                bootstrap_servers=bootstrap_servers, data_dir=data_dir,
                topic_prefix="storm", sla_seconds=3600,
                database_url=pg_url(database_name) if database_name else None,
                allowed_webhook_urls=[receiver.base_url], broker_env=broker_env,
            ))
            pids = {name: service.process.pid for name, service in system.services.items()
                    if service.process is not None}
            pids.update(broker_pids)
            phases, idle = asyncio.run(bench(system, receiver, args, pids))
    finally:
        if database_name:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(database_name))
    report(args, phases, idle, database)
    if args.json:
        Path(args.json).write_text(json.dumps([phase.__dict__ | {
            "storm": None if phase.storm is None else phase.storm.__dict__}
            for phase in phases], default=str, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hot-rate", type=float, default=5.0, help="hot leads per second")
    parser.add_argument("--signal-rate", type=float, default=2000.0)
    parser.add_argument("--batch", type=int, default=250, help="signals per batch request")
    parser.add_argument("--in-flight", type=int, default=8, help="batch requests at once")
    parser.add_argument("--cold", type=int, default=2000, help="cold leads the storm is about")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--sdrs", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--broker", choices=["embedded", "kafka", "kafka3"], default="embedded")
    parser.add_argument("--profile", help="directory for py-spy profiles of the storm")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--env", action="append", default=[],
                        help="KEY=VALUE for every service (repeat)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
