"""CPU per signal of the scorer's signals lane, in-process: no broker, no network.

The figure that holds still on a shared machine: process CPU time (all threads) spent by
`ScorerConsumer.apply` on batches of `SignalRecorded` events, as the `signals` process applies
them (a batch of `--batch` records, one signal per lead, the leads' stored tallies current),
over a real SQLite file (or PostgreSQL with `--database postgres`). The records are encoded
before the clock starts; decoding them is counted, as the consumer does it.

    python bench/scorer_apply_cpu.py                     # 2,000 leads, 10 rounds, batch 50
    python bench/scorer_apply_cpu.py --rounds 20 --batch 100 --repeat 5
    python bench/scorer_apply_cpu.py --profile /tmp/apply.prof   # cProfile of one pass

What it prints per pass: us of CPU a signal, signals a second of wall time (the wall figure
counts waits for a core), and how the leads' temperatures ended, so that a change that makes
leads warm sooner (more `lead.scored` events) is seen.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throwaway_db import create_database, drop_database, pg_url
from leadrelay.catalog import SERVICES
from leadrelay.heap import freeze_heap
from services.scorer.consumer import ScorerConsumer
from services.scorer.context import ScorerContext
from services.scorer.handlers import handler_table
from services.scorer.models import INBOX, OUTBOX, lead_score
from services.scorer.scoring_model import load_scoring_model
from shared.clock import ManualClock
from shared.db import Database
from shared.events import (
    Envelope,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    SignalRecorded,
    SignalRecordedData,
    Topics,
    encode_event,
)
from shared.metrics import ServiceMetrics
from shared.migrations import upgrade
from shared.outbox import Outbox

TOPICS = Topics("bench")
PARTITION = TopicPartition(TOPICS.signals, 0)


def records(events: Sequence[Envelope], offset: int) -> list[ConsumerRecord[bytes, bytes]]:
    batch = []
    for number, event in enumerate(events):
        value = encode_event(event)
        batch.append(ConsumerRecord(
            topic=PARTITION.topic, partition=0, offset=offset + number, timestamp=0,
            timestamp_type=0, key=event.lead_id.encode(), value=value, checksum=None,
            serialized_key_size=36, serialized_value_size=len(value), headers=[],
        ))
    return batch


def leads(count: int, rng: random.Random) -> list[LeadReceived]:
    received = []
    for number in range(count):
        profile = LeadProfile(
            email=f"lead{number}@company{number % 50}.example", company=f"Company {number % 50}",
            country=rng.choice(["FR", "DE", "US", "GB"]), employee_count=rng.randint(5, 3000),
            job_title=rng.choice(["VP Sales", "Engineer", "Head of Marketing", "Student"]),
        )
        received.append(LeadReceived(producer="bench", lead_id=str(uuid.uuid4()),
                                     data=LeadReceivedData(lead=profile)))
    return received


async def temperatures(db: Database) -> Counter[str]:
    async with db.reading() as session:
        return Counter(await session.scalars(select(lead_score.c.temperature)))


async def one_pass(url: str, args: argparse.Namespace, profiler: cProfile.Profile | None
                   ) -> tuple[float, float, Counter[str]]:
    """(us of CPU a signal, signals a second, temperatures) of one pass over a fresh lane."""
    rng = random.Random(7)
    clock = ManualClock()
    context = ScorerContext.build(
        Outbox(OUTBOX, topic=TOPICS.scores, shards=4, clock=clock), clock,
        load_scoring_model(), ServiceMetrics("scorer"),
    )
    db = Database(url)
    consumer = ScorerConsumer(
        context=context, name="scorer-signals", db=db, inbox=INBOX,
        handlers=handler_table(context), clock=clock,
        consumer=cast(AIOKafkaConsumer, object()),  # apply() never touches the Kafka client
    )
    try:
        received = leads(args.leads, rng)
        for start in range(0, len(received), 500):
            await consumer.apply({PARTITION: records(received[start:start + 500], start)})
        offset = len(received)
        batches = []
        for round_number in range(args.rounds):
            order = list(received)
            rng.shuffle(order)
            events = [
                SignalRecorded(producer="bench", lead_id=lead.lead_id, data=SignalRecordedData(
                    signal_id=f"open-{round_number}-{lead.lead_id[:8]}",
                    signal_type="email_open", signal_at=clock.now(),
                )) for lead in order
            ]
            for start in range(0, len(events), args.batch):
                batches.append(records(events[start:start + args.batch], offset + start))
            offset += len(events)
        freeze_heap()  # as `leadrelay serve` does once started
        signals = sum(len(batch) for batch in batches)
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for batch in batches:
            clock.advance(timedelta(milliseconds=20))
            await consumer.apply({PARTITION: batch})
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if consumer.dead_lettered:
            raise SystemExit(f"{consumer.dead_lettered} records dead-lettered")
        return cpu / signals * 1e6, signals / wall, await temperatures(db)
    finally:
        await db.dispose()


async def run(args: argparse.Namespace) -> None:
    spec = SERVICES["scorer"]
    cpu_figures, rates = [], []
    for number in range(args.repeat):
        database_name = await create_database() if args.database == "postgres" else None
        with tempfile.TemporaryDirectory() as data_dir:
            url = (pg_url(database_name) if database_name
                   else f"sqlite+aiosqlite:///{Path(data_dir) / 'scorer.db'}")
            try:
                await asyncio.to_thread(upgrade, spec.migrations_dir, url, spec.version_table)
                profiler = cProfile.Profile() if args.profile and number == 0 else None
                cpu, rate, temps = await one_pass(url, args, profiler)
                if profiler is not None:
                    profiler.dump_stats(args.profile)
            finally:
                if database_name:
                    await drop_database(database_name)
        cpu_figures.append(cpu)
        rates.append(rate)
        print(f"  pass {number + 1}: {cpu:6.1f} us CPU a signal, {rate:7,.0f} signals/s "
              f"(wall), temperatures {dict(sorted(temps.items()))}")
    print(f"scorer signals lane, {args.database}, {args.leads} leads x {args.rounds} "
          f"email_open, batch {args.batch}: CPU a signal median "
          f"{statistics.median(cpu_figures):.1f} us (min {min(cpu_figures):.1f}, "
          f"max {max(cpu_figures):.1f}); "
          f"{statistics.median(rates):,.0f} signals/s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10,
                        help="signals per lead, one per lead per round")
    parser.add_argument("--batch", type=int, default=50,
                        help="records per batch (the signals lane's default is 50)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the first pass here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
