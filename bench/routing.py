"""Router benchmarks: the routing decision, SLA timer lateness, and speed to route.

    python bench/routing.py decision               # choose_rep over 1,000 reps (target p99 <= 2 ms)
    python bench/routing.py consume                # lead.scored -> offer, ms per lead, by path
    python bench/routing.py timers                 # 10,000 open timers (target p99 lateness <= 1 s)
    python bench/routing.py timers --database postgres
    python bench/routing.py speed                  # 100 leads/s through all services
                                                   # (targets p50 <= 30 ms, p99 <= 100 ms)
    python bench/routing.py all

`decision` times the pure decision (eligibility of every rep in their own timezone, then the
strategy) and the whole `decide` step in a routing transaction (lock and roster counters,
cached roster, decision): one per transaction, 20 per transaction, and two router instances
taking turns (each then re-reads the per-assignment columns). `consume` times `lead.scored`
through the router's consumer, one handler at a time and by its batch path.
`timers` fills a database with 10,000 open offers whose deadlines fall over the coming
`--spread` seconds, runs the real `escalation-timer` loop with the wall clock, and reports how
late each escalation fired after its deadline. `speed` starts the embedded broker and the three
services as processes, sends leads at a fixed rate and times ingest's 202 -> the webhook
arriving at a local receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from cryptography.fernet import Fernet
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.speed_to_route import run as run_speed
from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.catalog import SERVICES
from services.router import roster_repository, service
from services.router.consumer import RouterConsumer
from services.router.escalation import EscalationTimer
from services.router.handlers import handler_table
from services.router.models import INBOX, OUTBOX, assignment, lead, sdr
from services.router.roster_cache import current_state
from services.router.routing import LeadFacts, Rep, choose_rep, parse_working_hours
from services.router.service import RouterContext
from services.router.settings import RouterSettings
from shared.clock import SystemClock
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import LeadProfile, LeadScored, LeadScoredData, encode_event
from shared.migrations import upgrade
from shared.outbox import Outbox

BENCH_KEYS = Fernet.generate_key().decode()
"""The routers' encryption keys (their action links are signed with a key derived from them)."""
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "UTC")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float], unit: str) -> str:
    if not values:
        return "no samples   n=0"
    return (f"p50 {percentile(values, 0.5):8.3f} {unit}   p90 {percentile(values, 0.9):8.3f} "
            f"{unit}   p99 {percentile(values, 0.99):8.3f} {unit}   max {max(values):8.3f} {unit}"
            f"   n={len(values)}")


def roster(count: int, now: datetime) -> list[Rep]:
    generator = random.Random(7)
    hours = parse_working_hours({day: ["00:00-23:59"] for day in
                                 ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})
    return [
        Rep(
            id=f"rep-{number:04d}", created_at=now - timedelta(days=generator.randint(1, 400)),
            timezone=generator.choice(ZONES), working_hours=hours,
            languages=frozenset(generator.sample(["en", "fr", "de", "es"], 2)),
            territories=frozenset(),
            capacity=generator.randint(5, 50), open_assignments=generator.randint(0, 10),
            weight=generator.choice((0.5, 1.0, 2.0)),
            presence=generator.choice(("available",) * 8 + ("away", "offline")),
            last_assigned_at=now - timedelta(seconds=generator.randint(0, 86_400)),
        )
        for number in range(count)
    ]


def bench_decision(reps_count: int, decisions: int) -> dict[str, list[float]]:
    now = datetime.now(UTC)
    reps = roster(reps_count, now)
    counts = {rep.id: random.Random(rep.id).randint(0, 40) for rep in reps}
    facts = LeadFacts(id="lead", temperature="hot", score=90, country="FR", language="fr")
    timings: dict[str, list[float]] = {}
    for strategy in ("round_robin", "weighted_fairness", "least_loaded"):
        samples = []
        pool = list(reps)
        for _ in range(decisions):
            started = time.perf_counter()
            decision = choose_rep(pool, facts, strategy, now, counts=counts,
                                  window_start=now - timedelta(days=7))
            samples.append((time.perf_counter() - started) * 1000)
            if decision.rep_id is not None:
                counts[decision.rep_id] = counts.get(decision.rep_id, 0) + 1
                index = next(i for i, rep in enumerate(pool) if rep.id == decision.rep_id)
                pool[index] = replace(pool[index], last_assigned_at=now)
        timings[strategy] = samples
    return timings


async def prepared_database(kind: str, data_dir: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'router.db'}"
        name = None
    else:
        name = await create_database()
        url = pg_url(name)
    spec = SERVICES["router"]
    await asyncio.to_thread(upgrade, spec.migrations_dir, url, spec.version_table)
    return url, name


async def fill_roster(db: Database, count: int, now: datetime, webhook: str | None = None
                      ) -> None:
    async with db.transaction() as session:
        await session.execute(insert(sdr), [
            {"id": f"rep-{number:04d}", "name": f"Rep {number}", "webhook_url": webhook,
             "email": f"rep{number}@bench.example", "active": True,
             "created_at": now - timedelta(days=30), "role": "sdr", "languages": [],
             "territories": [], "segments": [], "timezone": "UTC", "out_of_office": [],
             "presence": "available", "weight": 1.0}
            for number in range(count)
        ])


async def bench_decide_with_database(kind: str, reps_count: int, decisions: int,
                                     batch: int = 1, instances: int = 1) -> list[float]:
    """`decide` in a routing transaction (lock, roster state check, rules, pool, decision),
    `batch` decisions per transaction, each transaction by the next of `instances` router
    processes (their own roster cache each) in turn; ms per decision."""
    with tempfile.TemporaryDirectory() as directory:
        url, name = await prepared_database(kind, Path(directory))
        db = Database(url)
        try:
            now = datetime.now(UTC)
            await fill_roster(db, reps_count, now)
            settings = RouterSettings(database_url=url, encryption_keys=BENCH_KEYS)
            clock = SystemClock()
            contexts = [RouterContext.build(settings, Outbox(OUTBOX, topic="bench", shards=16,
                                                             clock=clock), clock)
                        for _ in range(instances)]
            row = {"id": "lead", "profile": {"email": "x@y.example", "country": "FR"},
                   "score": 90.0, "temperature": "hot", "waiting_since": None}
            for context in contexts:  # each instance's first read of the roster is not timed
                async with db.transaction() as session:
                    await service.decide(session, context, row, now)  # type: ignore[arg-type]
            samples = []
            for number in range(max(1, decisions // batch)):  # at least one transaction
                context = contexts[number % instances]
                async with db.transaction() as session:
                    for _ in range(batch):
                        started = time.perf_counter()
                        rep_id, _ = await service.decide(
                            session, context, row, now)  # type: ignore[arg-type]
                        samples.append((time.perf_counter() - started) * 1000)
                    if rep_id is not None:  # as an offer would: round robin moves on
                        await roster_repository.mark_sdr_assigned(session, rep_id, now)
                        state = current_state(session)
                        assert state is not None
                        state.assigned(rep_id, now)
            return samples
        finally:
            await db.dispose()
            if name:
                await drop_database(name)


def scored_event(lead_id: str, clock: SystemClock) -> LeadScored:
    return LeadScored(producer="bench", lead_id=lead_id, occurred_at=clock.now(),
                      data=LeadScoredData(
                          score=90, fit=50, engagement=40, temperature="hot", model_version="b",
                          breakdown=[], lead=LeadProfile(email=f"{lead_id}@b.example",
                                                         name="Ada", demo_requested=True)))


async def bench_consume(kind: str, reps_count: int, leads: int, batch: int, one_by_one: bool
                        ) -> float:
    """ms per `lead.scored` applied by the router's consumer (its batch path, or the shared
    loop one handler at a time), `batch` events per consumer batch: lead, assignment,
    notification, `assignment.offered`."""
    with tempfile.TemporaryDirectory() as directory:
        url, name = await prepared_database(kind, Path(directory))
        db = Database(url)
        try:
            await fill_roster(db, reps_count, datetime.now(UTC), "http://127.0.0.1:9/hook")
            settings = RouterSettings(database_url=url, sla_reminder_fraction=0,
                                      encryption_keys=BENCH_KEYS)
            clock = SystemClock()
            context = RouterContext.build(settings, Outbox(OUTBOX, topic="bench", shards=16,
                                                           clock=clock), clock)
            arguments: dict[str, Any] = {"name": "router", "db": db, "inbox": INBOX,
                                         "consumer": None, "handlers": handler_table(context),
                                         "clock": clock}
            consumer = (EventConsumer(**arguments) if one_by_one
                        else RouterConsumer(context=context, **arguments))
            events = [scored_event(f"lead-{number}", clock) for number in range(leads + batch)]

            def records(first: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
                return {TopicPartition("bench", 0): [ConsumerRecord(
                    topic="bench", partition=0, offset=first + index, timestamp=0,
                    timestamp_type=0, key=event.lead_id.encode(), value=encode_event(event),
                    checksum=None, serialized_key_size=0, serialized_value_size=0, headers=[])
                    for index, event in enumerate(events[first:first + batch])]}

            await consumer.apply(records(leads))  # warm up: the roster is read once
            started = time.perf_counter()
            for first in range(0, leads, batch):
                await consumer.apply(records(first))
            return (time.perf_counter() - started) * 1000 / leads
        finally:
            await db.dispose()
            if name:
                await drop_database(name)


async def bench_timers(kind: str, open_timers: int, spread: float, window: float,
                       reps_count: int) -> list[float]:
    """Lateness (s) of each escalation that fell due during `window` seconds."""
    with tempfile.TemporaryDirectory() as directory:
        url, name = await prepared_database(kind, Path(directory))
        db = Database(url)
        try:
            now = datetime.now(UTC)
            await fill_roster(db, reps_count, now)
            start = now + timedelta(seconds=10)
            generator = random.Random(3)
            deadlines = sorted(start + timedelta(seconds=generator.uniform(0, spread))
                               for _ in range(open_timers))
            for first in range(0, open_timers, 1000):
                chunk = range(first, min(first + 1000, open_timers))
                async with db.transaction() as session:
                    await session.execute(insert(lead), [
                        {"id": f"lead-{n}", "profile": {"email": f"l{n}@bench.example"},
                         "score": 90.0, "temperature": "hot", "status": "routed",
                         "scored_at": now, "updated_at": now} for n in chunk])
                    await session.execute(insert(assignment), [
                        {"id": f"offer-{n}", "lead_id": f"lead-{n}",
                         "sdr_id": f"rep-{n % reps_count:04d}", "status": "offered",
                         "attempt": 1, "offered_at": now, "deadline_at": deadlines[n],
                         "lead_snapshot": {}, "role": "sdr"} for n in chunk])
            settings = RouterSettings(database_url=url, sla_accept_seconds=3600,
                                      encryption_keys=BENCH_KEYS,
                                      sla_reminder_fraction=0)
            clock = SystemClock()
            context = RouterContext.build(settings, Outbox(OUTBOX, topic="bench", shards=16,
                                                           clock=clock), clock)
            timer = EscalationTimer(db, context, interval=settings.timer_interval_seconds,
                                    batch_size=settings.escalation_batch_size)
            running = asyncio.create_task(timer.run())
            await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + window)
            running.cancel()
            [outcome] = await asyncio.gather(running, return_exceptions=True)
            if not isinstance(outcome, asyncio.CancelledError):
                raise RuntimeError(f"the timer loop stopped: {outcome!r}")
            async with db.reading() as session:
                rows = (await session.execute(
                    assignment.select().where(assignment.c.status == "escalated")
                )).mappings().all()
            return [(row["closed_at"] - row["deadline_at"]).total_seconds() for row in rows]
        finally:
            await db.dispose()
            if name:
                await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["decision", "consume", "timers", "speed", "all"])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=200.0,
                        help="deadlines fall uniformly over this many seconds")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of escalations measured")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    if args.what in ("decision", "all"):
        for strategy, samples in bench_decision(args.reps, args.decisions).items():
            print(f"decision, pure, {args.reps} reps, {strategy:<17} {summary(samples, 'ms')}")
        for batch, instances, what in ((1, 1, "one per transaction"),
                                       (20, 1, "20 per transaction"),
                                       (1, 2, "one per transaction, 2 instances in turn")):
            samples = asyncio.run(bench_decide_with_database(
                args.database, args.reps, args.decisions // 4, batch, instances))
            print(f"decision, with {args.database} reads, {args.reps} reps, {what}: "
                  f"{summary(samples, 'ms')}")
    if args.what in ("consume", "all"):
        for reps_count in (20, args.reps):
            for batch, one_by_one, what in ((1, True, "shared loop, 1 per batch"),
                                            (5, True, "shared loop, 5 per batch"),
                                            (1, False, "batch path, 1 per batch"),
                                            (5, False, "batch path, 5 per batch"),
                                            (50, False, "batch path, 50 per batch")):
                took = asyncio.run(bench_consume(args.database, reps_count, 300, batch,
                                                 one_by_one))
                print(f"lead.scored -> offer, {args.database}, {reps_count} reps, {what}: "
                      f"{took:.2f} ms per lead")
    if args.what in ("timers", "all"):
        lateness = asyncio.run(bench_timers(args.database, args.timers, args.spread, args.window,
                                            reps_count=50))
        print(f"timer lateness, {args.database}, {args.timers} open timers, "
              f"{len(lateness)} fired in {args.window:g} s: {summary(lateness, 's')}")
    if args.what in ("speed", "all"):
        run_speed(args.database, argparse.Namespace(
            rate=args.rate, seconds=args.seconds, sdrs=20, drain_seconds=30.0))


if __name__ == "__main__":
    main()
