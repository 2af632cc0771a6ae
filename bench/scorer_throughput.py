"""Scorer throughput: signals per second the scorer sustains from the broker with its database.

Starts the embedded broker and a fresh database (an SQLite file, or a throwaway PostgreSQL
database), produces a backlog of leads (leads topic) and their signals (signals topic), then
measures in
the same run:

1. the raw consume rate of a bare aiokafka consumer (its own group) reading that backlog;
2. the rate at which the scorer (in-process, its real consumer loop, handlers and database)
   applies the same backlog: events and signals per second, and the ratio to (1);
3. the time to score one event against a 500-rule model, p50 and p99: `score()` of a signal
   (the profile's fit lines are remembered) and of a changed profile (every fit rule tried),
   `score_and_next_change()` and `rescore()` (row and `lead.scored` event too), which is what
   the consumer computes once per lead and batch.

On a shared machine the wall-clock figures count the time the process waits for a core, so
each figure also comes as CPU time: CPU microseconds per message or event of this process
(all threads: the scorer's consumer, relay and SQLite thread; not the PostgreSQL server), and
the thread CPU time of each scoring call.

    python bench/scorer_throughput.py                      # SQLite
    python bench/scorer_throughput.py --database postgres  # PostgreSQL on 127.0.0.1:5432
    python bench/scorer_throughput.py --leads 500 --signals-per-lead 19
    python bench/scorer_throughput.py --leads 2000 --signals-per-lead 30 \
        --signal-types email_open --throughput-only          # a campaign's storm

The scorer's heap is frozen after its start-up, as `leadrelay serve` does (`leadrelay.heap`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.catalog import SERVICES
from leadrelay.heap import freeze_after_startup
from services.scorer.app import create_app
from services.scorer.context import ScorerContext
from services.scorer.models import OUTBOX
from services.scorer.score_result import Signal
from services.scorer.scoring import score, score_and_next_change
from services.scorer.scoring_model import ScoringModel, load_scoring_model
from services.scorer.service import rescore
from services.scorer.settings import ScorerSettings
from shared.clock import ManualClock
from shared.events import (
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    SignalRecorded,
    SignalRecordedData,
    encode_event,
)
from shared.kafka import ensure_topics
from shared.kafka_security import client_security
from shared.metrics import ServiceMetrics
from shared.migrations import upgrade
from shared.outbox import Outbox
from shared.runtime import ServiceRuntime

SIGNAL_TYPES = ["email_open", "email_click", "content_download", "page_view", "webinar_attended"]
NOW = datetime.now(UTC)


def backlog(
    leads: int, signals_per_lead: int, signal_types: list[str] = SIGNAL_TYPES
) -> list[tuple[str, bytes]]:
    """(key, value) of every event: each lead, then its signals, interleaved across leads."""
    rng = random.Random(7)
    lead_ids = [str(uuid.uuid4()) for _ in range(leads)]
    events: list[tuple[str, bytes]] = []
    for number, lead_id in enumerate(lead_ids):
        profile = LeadProfile(
            email=f"lead{number}@company{number % 50}.example", company=f"Company {number % 50}",
            country=rng.choice(["FR", "DE", "US", "GB"]), employee_count=rng.randint(5, 3000),
            job_title=rng.choice(["VP Sales", "Engineer", "Head of Marketing", "Student"]),
        )
        event = LeadReceived(producer="bench", lead_id=lead_id,
                             data=LeadReceivedData(lead=profile))
        events.append((lead_id, encode_event(event)))
    for round_number in range(signals_per_lead):
        for lead_id in lead_ids:
            signal_type = rng.choice(signal_types)
            event = SignalRecorded(
                producer="bench", lead_id=lead_id,
                data=SignalRecordedData(
                    signal_id=f"{lead_id[:8]}-{round_number}", signal_type=signal_type,
                    signal_at=NOW - timedelta(days=rng.uniform(0, 60)),
                    url="https://acme.example/pricing" if signal_type == "page_view" else None,
                ),
            )
            events.append((lead_id, encode_event(event)))
    return events


async def produce(bootstrap_servers: str, topic: str, events: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key.encode(), value=value)
                   for key, value in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume_rate(settings: ScorerSettings, total: int) -> tuple[float, float]:
    """Messages/s of a bare consumer, configured like the scorer's, from first to last message;
    and the CPU seconds this process spent per message meanwhile."""
    consumer = AIOKafkaConsumer(
        settings.topics.leads, settings.topics.signals,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.kafka_max_batch,
        **client_security(settings),
    )
    await consumer.start()
    try:
        seen, first_at, first_cpu = 0, 0.0, 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000)
            count = sum(len(messages) for messages in batch.values())
            if count and not seen:
                first_at, first_cpu = time.perf_counter(), time.process_time()
                count -= 1  # the rate counts what arrived after the first message
                total -= 1
            seen += count
            if batch:
                await consumer.commit()
        cpu = time.process_time() - first_cpu
        return seen / (time.perf_counter() - first_at), cpu / seen
    finally:
        await consumer.stop()


async def scorer_rate(settings: ScorerSettings, total: int) -> tuple[float, float, float]:
    """Events/s the scorer applies, from its first applied event to the last; the seconds; and
    the CPU seconds per event of this process meanwhile (consumer, relay, all of the scorer)."""
    app = freeze_after_startup(create_app(settings))  # as `leadrelay serve` runs it
    async with app.router.lifespan_context(app):
        runtime: ServiceRuntime = app.state.runtime

        def done() -> int:
            return sum(consumer.applied + consumer.duplicates + consumer.dead_lettered
                       for consumer in runtime.consumers.values())

        first_count, first_at, first_cpu = 0, 0.0, 0.0
        while True:
            count = done()
            if count and not first_at:
                first_count, first_at, first_cpu = count, time.perf_counter(), time.process_time()
            if count >= total:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - first_at
        cpu = time.process_time() - first_cpu
        dead = sum(consumer.dead_lettered for consumer in runtime.consumers.values())
        if dead:
            raise SystemExit(f"{dead} events were dead-lettered; the figures would be wrong")
    return (total - first_count) / elapsed, elapsed, cpu / (total - first_count)


def big_model(rules: int = 500) -> ScoringModel:
    """A model of `rules` rules: 80% fit rules of every operator, the rest on signals."""
    base = load_scoring_model().document()
    fit: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    makers: list[Callable[[int], dict[str, Any]]] = [
        lambda n: {"field": "industry", "operator": "equals", "value": f"industry-{n}"},
        lambda n: {"field": "country", "operator": "in", "values": ["FR", "DE", f"X{n % 10}"]},
        lambda n: {"field": "employee_count", "operator": "range", "min": n, "max": n * 10},
        lambda n: {"field": "job_title", "operator": "keywords", "keywords": ["vp", f"k{n}"]},
        lambda n: {"field": "email_domain", "operator": "regex", "pattern": rf"^c{n}\."},
        lambda n: {"field": "website", "operator": "missing"},
    ]
    fit_count = rules * 4 // 5 - len(base["fit_rules"])
    for number in range(fit_count):
        rule = makers[number % len(makers)](number)
        fit.append({"id": f"fit-{number}", "points": (number % 7) - 2, **rule})
    signal_count = rules - fit_count - len(base["fit_rules"]) - len(base["buying_signals"])
    for number in range(signal_count):
        signals.append({
            "id": f"signal-{number}", "signal_type": SIGNAL_TYPES[number % len(SIGNAL_TYPES)],
            "points": 5, "repeatable": number % 2 == 0, "cap": 40, "half_life_days": 30,
        })
    document = {**base, "version": "bench-500", "fit_rules": [*base["fit_rules"], *fit],
                "engagement_rules": signals}
    model = ScoringModel.model_validate(document)
    assert len(model.rules) == rules, len(model.rules)
    return model


Timings = tuple[float, float, float, float]
"""p50 and p99 of the wall time, p50 and p99 of the CPU time of this thread, in ms."""


def scoring_latency(samples: int = 5000) -> dict[str, Timings]:
    """The time to score one event against the 500-rule model, in four ways.

    A signal leaves the lead's profile as it was: the fit lines it matched are remembered,
    so `score()` of a signal event only works out engagement. A new or changed profile has
    every fit rule tried: that is measured with a profile that differs at every call. The
    consumer computes `score_and_next_change()` per lead, inside `rescore()`, which also
    builds the stored row and the `lead.scored` event. Wall times on a shared machine count
    the moments the process waits for a core; CPU times do not.
    """
    model = big_model()
    rng = random.Random(3)
    profile = LeadProfile(email="ada@c42.example", company="Acme", country="FR",
                          employee_count=420, job_title="VP Sales", industry="industry-6")
    history = [
        Signal(f"s{n}", rng.choice(SIGNAL_TYPES), NOW - timedelta(days=rng.uniform(0, 90)))
        for n in range(20)
    ]
    context = ScorerContext.build(
        Outbox(OUTBOX, topic="bench", shards=1), ManualClock(NOW), model, ServiceMetrics("bench")
    )
    stored = rescore(context, "lead-1", None, profile, history[:-1], now=NOW, cause="signal").row
    counter = iter(range(10**9))

    def changed_profile() -> LeadProfile:
        number = next(counter)
        return profile.model_copy(update={"employee_count": 5 + number % 5000,
                                          "email": f"ada{number}@c{number % 97}.example"})

    timings: dict[str, Timings] = {}
    cases: list[tuple[str, Callable[[], object]]] = [
        ("score(), signal", lambda: score(profile, history, model, NOW).breakdown),
        ("score(), new profile", lambda: score(changed_profile(), history, model, NOW).breakdown),
        ("score_and_next_change()", lambda: score_and_next_change(profile, history, model, NOW)),
        ("rescore(), signal", lambda: rescore(context, "lead-1", stored, profile, history,
                                              now=NOW, cause="signal", active=True)),
    ]
    for name, work in cases:
        for _ in range(200):
            work()
        walls, cpus = [], []
        for _ in range(samples):
            started, started_cpu = time.perf_counter(), time.thread_time()
            work()
            cpus.append((time.thread_time() - started_cpu) * 1000)
            walls.append((time.perf_counter() - started) * 1000)
        walls.sort()
        cpus.sort()
        timings[name] = (statistics.median(walls), walls[int(0.99 * len(walls))],
                         statistics.median(cpus), cpus[int(0.99 * len(cpus))])
    return timings


async def measure(settings: ScorerSettings, args: argparse.Namespace) -> None:
    await ensure_topics(settings, settings.topics.all)
    events = backlog(args.leads, args.signals_per_lead, args.signal_types.split(","))
    await produce(settings.kafka_bootstrap_servers, settings.topics.leads, events[:args.leads])
    await produce(settings.kafka_bootstrap_servers, settings.topics.signals,
                  events[args.leads:])
    raw, raw_cpu = await raw_consume_rate(settings, len(events))
    applied, seconds, cpu = await scorer_rate(settings, len(events))
    signal_share = args.signals_per_lead / (args.signals_per_lead + 1)
    print(f"scorer throughput, {args.database}: {len(events)} events "
          f"({args.leads} leads, {args.leads * args.signals_per_lead} signals), "
          f"batches of up to {settings.kafka_max_batch}")
    print(f"  bare aiokafka consumer : {raw:9,.0f} msg/s      CPU {raw_cpu * 1e6:7.1f} us/msg")
    print(f"  scorer (with database) : {applied:9,.0f} events/s   CPU {cpu * 1e6:7.1f} us/event"
          f"  ({applied * signal_share:,.0f} signals/s, {seconds:.1f} s)")
    print(f"  ratio                  : {applied / raw:9.3f}   (target >= 0.5); "
          f"CPU ratio {raw_cpu / cpu:.3f}")
    if args.throughput_only:
        return
    for name, (p50, p99, cpu50, cpu99) in scoring_latency().items():
        print(f"  {name:<24}, 500 rules: p50 {p50:.3f} ms  p99 {p99:.3f} ms   "
              f"CPU p50 {cpu50:.3f} ms  p99 {cpu99:.3f} ms   (target p99 <= 1 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--leads", type=int, default=500)
    parser.add_argument("--signals-per-lead", type=int, default=19)
    parser.add_argument("--signal-types", default=",".join(SIGNAL_TYPES),
                        help="comma-separated; email_open alone is a campaign's storm")
    parser.add_argument("--throughput-only", action="store_true",
                        help="skip the scoring-latency figures (3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    database_name = asyncio.run(create_database()) if args.database == "postgres" else None
    try:
        with ExitStack() as stack:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            broker = stack.enter_context(EmbeddedBroker(free_port()))
            url = (pg_url(database_name)
                   if database_name else f"sqlite+aiosqlite:///{data_dir / 'scorer.db'}")
            spec = SERVICES["scorer"]
            upgrade(spec.migrations_dir, url, spec.version_table)
            settings = ScorerSettings(
                database_url=url, kafka_bootstrap_servers=broker.bootstrap_servers,
                kafka_topic_prefix=f"bench{uuid.uuid4().hex[:6]}", decay_sweep_seconds=3600,
                lead_keys_url="",  # the backlog is not sealed: no ingest to ask for keys
            )
            asyncio.run(measure(settings, args))
    finally:
        if database_name:
            asyncio.run(drop_database(database_name))


if __name__ == "__main__":
    main()
