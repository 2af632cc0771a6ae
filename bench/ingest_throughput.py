"""Ingest throughput: leads/s and latency of `POST /v1/leads` against a bare FastAPI endpoint.

Both targets run the same way in the same run: a uvicorn process each (one worker, the
settings `leadrelay serve` uses) on a free 127.0.0.1 port, loaded by a bounded number of
concurrent httpx clients (spread over a few generator processes, since one httpx process
cannot keep up with bare FastAPI), each posting one lead at a time. Both processes stay up and
their measurements alternate in rounds (warm-up, then a fixed measured window), so load from
other processes on the machine weighs on both alike. The bare target validates the same JSON
into a plain pydantic model and answers 202; the ingest target is the real service with its
database (SQLite file by default), the outbox, the relay and the embedded broker running.
Printed: leads/s, p50 and p99 of each, the ratio ingest/bare (target >= 0.5), the server
process's CPU time per lead and the ratio by that measure (what a dedicated core would give),
how long the relay took to publish the backlog, and a check that every 202 is a stored lead.
`--profile FILE` samples the ingest process with py-spy (collapsed stacks).

    python bench/ingest_throughput.py                          # SQLite file
    python bench/ingest_throughput.py --postgres               # throwaway database on :5432
    python bench/ingest_throughput.py --database-url postgresql://postgres@host/db
    python bench/ingest_throughput.py --clients 64 --rounds 5 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_seconds
from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.broker import EmbeddedBroker, free_port, wait_for_port
from leadrelay.catalog import SERVICES
from shared.db import Database
from shared.migrations import upgrade
from shared.settings import normalise_database_url

ADMIN_TOKEN = "bench-admin-token-0123456789"
"""ingest's lead posts take a credential; the bare endpoint ignores the header."""


class BareLead(BaseModel):
    """The bare endpoint's body: the fields the benchmark posts, as plain strings."""

    email: str
    name: str | None = None
    company: str | None = None
    country: str | None = None
    job_title: str | None = None
    source: str | None = None


def bare_app() -> FastAPI:
    """The baseline: FastAPI, a pydantic body of the same shape, a 202 with a JSON answer."""
    app = FastAPI()

    @app.post("/v1/leads", status_code=202)
    async def submit(lead: BareLead) -> JSONResponse:
        return JSONResponse({"lead_id": str(uuid.uuid4()), "status": "created"}, status_code=202)

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def serve(target: str, port: int) -> None:
    """Run one target in this process, with the uvicorn settings of `leadrelay serve`."""
    import uvicorn

    from shared.logs import configure_logging

    configure_logging(f"bench-{target}", "WARNING")
    app: Any = bare_app() if target == "bare" else SERVICES["ingest"].app_factory
    uvicorn.run(app, factory=target != "bare", host="127.0.0.1", port=port, log_config=None,
                access_log=False, timeout_graceful_shutdown=10)


@dataclass
class Measured:
    name: str
    accepted: int = 0
    """202s sent and answered within the measured window."""
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answered_202: int = 0
    """Every 202, warm-up and window edges included (each one must be a stored lead)."""
    cpu_seconds: float = 0.0
    """CPU time the server process used over the whole load (all its threads)."""

    def add(self, other: Measured) -> None:
        self.accepted += other.accepted
        self.failed += other.failed
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        self.answered_202 += other.answered_202
        self.cpu_seconds += other.cpu_seconds

    @property
    def cpu_ms_per_lead(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.answered_202)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def percentile(self, q: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1] * 1000

    def line(self) -> str:
        return (f"{self.name:<16} {self.rate:9.0f} leads/s   p50 {self.percentile(50):6.1f} ms"
                f"   p99 {self.percentile(99):6.1f} ms   ({self.accepted} accepted, "
                f"{self.failed} failed, {self.seconds:.1f} s), "
                f"server CPU {self.cpu_ms_per_lead:.2f} ms/lead")


def lead_body(run: str, number: int) -> dict[str, Any]:
    return {"email": f"lead-{run}-{number}@acme-{number % 97}.example", "name": "Ada Lovelace",
            "company": f"Acme {number % 97}", "country": "DE", "job_title": "Head of Sales",
            "source": "bench"}


async def load(base_url: str, *, clients: int, start_at: float, warmup: float,
               seconds: float, run: str) -> Measured:
    """`clients` concurrent clients post leads from `start_at` (wall clock) for `warmup` +
    `seconds`; what was sent and answered within the last `seconds` is kept."""
    numbers = iter(range(10**9))
    window_start, window_end = start_at + warmup, start_at + warmup + seconds
    latencies: list[float] = []
    counts = {"accepted": 0, "failed": 0, "answered_202": 0}
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            while (sent_at := time.time()) < window_end:
                try:
                    answer = await http.post("/v1/leads", json=lead_body(run, next(numbers)))
                    ok = answer.status_code == 202
                except httpx.HTTPError:
                    ok = False
                done_at = time.time()
                counts["answered_202"] += ok
                if sent_at >= window_start and done_at <= window_end:
                    latencies.append(done_at - sent_at)
                    counts["accepted" if ok else "failed"] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return Measured("", counts["accepted"], counts["failed"], seconds, latencies,
                    counts["answered_202"])


def load_in_process(base_url: str, clients: int, start_at: float, warmup: float,
                    seconds: float, run: str) -> Measured:
    return asyncio.run(load(base_url, clients=clients, start_at=start_at, warmup=warmup,
                            seconds=seconds, run=run))


def load_in_processes(name: str, base_url: str, args: argparse.Namespace, run: str) -> Measured:
    """The load spread over `args.processes` generator processes (httpx is CPU-bound)."""
    start_at = time.time() + 1.5
    shares = [args.clients // args.processes + (i < args.clients % args.processes)
              for i in range(args.processes)]
    with ProcessPoolExecutor(args.processes) as pool:
        parts = list(pool.map(
            load_in_process, [base_url] * args.processes, shares, [start_at] * args.processes,
            [args.warmup] * args.processes, [args.seconds] * args.processes,
            [f"{run}p{i}" for i in range(args.processes)],
        ))
    total = Measured(name, seconds=args.seconds)
    for part in parts:
        total.add(part)
    total.seconds = args.seconds
    return total


async def ready(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url) as http:
        while True:
            try:
                answer = await http.get("/readyz")
                if answer.status_code == 200 and all(answer.json().values()):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url} not ready after {timeout:.0f} s")
            await asyncio.sleep(0.1)


async def stored_and_pending(database_url: str) -> tuple[int, int]:
    from services.ingest.models import OUTBOX, lead

    db = Database(database_url)
    try:
        async with db.reading() as session:
            leads = await session.scalar(select(func.count()).select_from(lead))
            pending = await session.scalar(
                select(func.count()).select_from(OUTBOX.events)
                .where(OUTBOX.events.c.published_at.is_(None))
            )
        return int(leads or 0), int(pending or 0)
    finally:
        await db.dispose()


class Target:
    """One target's uvicorn process."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(self.port)],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_profiler(pid: int, seconds: float, path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        # --gil: only the thread holding the GIL, i.e. where the process spends its CPU.
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--duration",
         str(int(seconds)), "--rate", "250", "--gil", "--nonblocking", "--output", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def start(kind: str, env: dict[str, str]) -> Target:
    target = Target(kind, env)
    wait_for_port("127.0.0.1", target.port, timeout=30)
    await ready(target.url)
    return target


async def measure(name: str, target: Target, args: argparse.Namespace, run: str,
                  profile: str | None = None) -> Measured:
    profiler = None
    if profile:
        # Sampled for the whole load (warm-up included), as collapsed stacks.
        profiler = start_profiler(target.process.pid, args.warmup + args.seconds + 2, profile)
    cpu_before = cpu_seconds(target.process.pid)
    result = await asyncio.to_thread(load_in_processes, name, target.url, args, run)
    result.cpu_seconds = cpu_seconds(target.process.pid) - cpu_before
    if profiler is not None:
        await asyncio.to_thread(profiler.wait)
    return result


async def bench(args: argparse.Namespace, database_url: str, bootstrap_servers: str) -> None:
    """Both targets stay up; their measurements alternate, so load from other processes on
    the machine weighs on both alike."""
    run = uuid.uuid4().hex[:8]
    env = {"LEADRELAY_DATABASE_URL": database_url,
           "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
           "LEADRELAY_KAFKA_TOPIC_PREFIX": f"bench{run}", "LEADRELAY_LOG_LEVEL": "WARNING",
           "LEADRELAY_ADMIN_TOKEN": ADMIN_TOKEN}
    before, _ = await stored_and_pending(database_url)
    bare_target, ingest_target = await start("bare", {}), await start("ingest", env)
    try:
        bare, ingest = Measured("bare FastAPI"), Measured("POST /v1/leads")
        print(f"database: {make_safe(database_url)}; {args.clients} clients in "
              f"{args.processes} processes; {args.rounds} rounds of {args.warmup:.0f} s "
              f"warm-up + {args.seconds:.0f} s measured per target")
        for number in range(args.rounds):
            bare_round = await measure("bare FastAPI", bare_target, args, f"{run}b{number}")
            ingest_round = await measure("POST /v1/leads", ingest_target, args,
                                         f"{run}i{number}",
                                         args.profile if number == 0 else None)
            print(f"  round {number + 1}: bare {bare_round.rate:.0f}/s, ingest "
                  f"{ingest_round.rate:.0f}/s, ratio {ingest_round.rate / bare_round.rate:.2f}")
            bare.add(bare_round)
            ingest.add(ingest_round)
        drain_started = time.perf_counter()
        while (state := await stored_and_pending(database_url))[1]:
            if time.perf_counter() - drain_started > 120:
                break
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - drain_started
    finally:
        bare_target.stop()
        ingest_target.stop()
    stored = state[0] - before
    print(bare.line())
    print(ingest.line())
    print(f"ratio ingest/bare: {ingest.rate / bare.rate:.2f} (target >= 0.5); by server CPU "
          f"per lead: {bare.cpu_ms_per_lead / ingest.cpu_ms_per_lead:.2f} (less sensitive to "
          "other load on the machine; PostgreSQL's and the broker's CPU not included)")
    print(f"outbox: {state[1]} events unpublished {drained:.1f} s after the load ended; "
          f"{stored} leads stored, {ingest.answered_202} answered 202 (warm-ups included): "
          f"{'OK' if stored == ingest.answered_202 else 'MISMATCH'}")


def make_safe(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway database on 127.0.0.1:5432, dropped afterwards")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2,
                        help="load generator processes sharing the clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating measurements of each target")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--profile", metavar="FILE",
                        help="sample the ingest process with py-spy into FILE (collapsed stacks)")
    parser.add_argument("--serve", choices=["bare", "ingest"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    spec = SERVICES["ingest"]
    with ExitStack() as stack:
        if args.postgres:
            name = asyncio.run(create_database())
            stack.callback(lambda: asyncio.run(drop_database(name)))
            url = pg_url(name)
        elif args.database_url:
            url = normalise_database_url(args.database_url)
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite+aiosqlite:///{Path(folder) / 'ingest.db'}"
        upgrade(spec.migrations_dir, url, spec.version_table)
        broker = stack.enter_context(EmbeddedBroker(free_port()))
        asyncio.run(bench(args, url, broker.bootstrap_servers))


if __name__ == "__main__":
    main()
