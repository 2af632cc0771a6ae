"""Faults under load: kill -9 brokers, service instances and PostgreSQL while hot leads flow,
then check independently that nothing acknowledged was lost, doubled or left stuck.

    python bench/faults.py --embedded        # tansu + SQLite, one instance of each service
    python bench/faults.py                   # Apache Kafka (3 brokers) + PostgreSQL, 2 of each
    python bench/faults.py --leads 500 --rate 20 --service-kills 1   # what CI runs

The load (`bench/fault_load.py`) sends hot leads at a steady rate, 10% of them twice with the
same `Idempotency-Key`, and retries only connection errors and 503. While it runs:
- embedded: the broker is killed -9 and restarted twice, and each service once;
- Apache Kafka: the broker leading the most partitions is killed -9 and restarted, every
  service instance is killed -9 twice (restarted after 1-3 s), and PostgreSQL is restarted
  once with `pg_ctl restart -m immediate`.
The checker reads the router's database and the local webhook receiver. It prints the fault
table and, per fault, the recovery time: from the fault to the first offer delivered for a
lead acknowledged after it. Each lead without an offer at the end is located (how far it got:
ingest's outbox, the scorer, the router) and waited for a while longer, so a late lead is told
from a lost one. Exit status 1 when any lead was lost, doubled, stuck or undelivered, refused or
given up on by the client, or a killed part did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fault_load import (
    LoadResult,
    Verdict,
    Whereabouts,
    check,
    consumer_lag,
    locate,
    offer_deliveries,
    recovery_seconds,
    send_leads,
    wait_for_late,
    wait_until_delivered,
)
from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.harness.kafka import KafkaCluster
from leadrelay.harness.postgres import PostgresCluster
from leadrelay.local_system import (
    RunningSystem,
    WebhookReceiver,
    running_system,
    webhook_receiver,
)
from leadrelay.processes import ServiceProcess

READY_TIMEOUT = 60.0
"""Seconds a restarted service instance has to answer `/readyz` again."""


@dataclass
class Fault:
    """Something to break `at` seconds into the load; `act` blocks until it is repaired."""

    at: float
    name: str
    act: Callable[[], None]
    began_at: float | None = None
    repaired_at: float | None = None
    """When the broken part served again (a restarted instance ready); None: it never did."""

    def run(self) -> None:
        self.began_at = time.monotonic()
        try:
            self.act()
        except (TimeoutError, LookupError) as error:
            print(f"  {self.name}: not repaired: {error}", flush=True)
            return
        self.repaired_at = time.monotonic()


def kill_and_restart(process: ServiceProcess, pause: float,
                     turn: threading.Lock) -> Callable[[], None]:
    """kill -9 the instance, start it again `pause` seconds later, wait until it is ready (an
    instance that exits `RESTARTS` times while starting is a fault never repaired).
    `turn` is the instance's: a second kill due while the first is being repaired waits."""
    def act() -> None:
        with turn:
            kill_wait_and_start(process, pause)
    return act


RESTARTS = 3
"""Starts an exited instance gets, as an orchestrator's restart policy would give it (a start
can fail on its own: `serve` exits at once when PostgreSQL refuses connections, as it does for a
moment while it restarts)."""


def kill_wait_and_start(process: ServiceProcess, pause: float) -> None:
    process.kill()
    time.sleep(pause)
    deadline = time.monotonic() + READY_TIMEOUT
    for start in range(1, RESTARTS + 1):
        process.start()
        while not process.ready():
            if not process.alive():
                if start == RESTARTS:
                    raise TimeoutError(f"exited {start} times while starting again; "
                                       f"see {process.log_path}")
                print(f"  {process.name} exited while starting again; starting it again",
                      flush=True)
                time.sleep(1.0)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready {READY_TIMEOUT:g} s after starting again")
            time.sleep(0.1)
        else:
            return


def service_faults(system: RunningSystem, kills_each: int, seconds: float,
                   chooser: random.Random) -> list[Fault]:
    """Each service instance killed -9 `kills_each` times at random moments of the load."""
    faults = []
    for name, processes in system.instances.items():
        for number, process in enumerate(processes, start=1):
            turn = threading.Lock()
            for _ in range(kills_each):
                faults.append(Fault(
                    at=chooser.uniform(0.1, 0.8) * seconds, name=f"kill -9 {name} #{number}",
                    act=kill_and_restart(process, chooser.uniform(1.0, 3.0), turn)))
    return faults


def embedded_broker_faults(broker: EmbeddedBroker, seconds: float) -> list[Fault]:
    def act() -> None:
        broker.kill()
        time.sleep(1.0)
        broker.start()
    return [Fault(at=fraction * seconds, name="kill -9 the embedded broker", act=act)
            for fraction in (0.3, 0.65)]


def kafka_broker_fault(cluster: KafkaCluster, at: float) -> Fault:
    """kill -9 the broker leading the most partitions when the fault comes, restart it 3 s
    later (the restart waits until every broker is registered again)."""
    fault = Fault(at=at, name="kill -9 the Kafka broker leading most partitions",
                  act=lambda: None)

    def act() -> None:
        node = cluster.busiest_leader()
        fault.name = f"kill -9 Kafka broker {node} (leads most partitions)"
        cluster.kill(node)
        time.sleep(3.0)
        cluster.restart(node)
    fault.act = act
    return fault


def postgres_fault(postgres: PostgresCluster, at: float) -> Fault:
    return Fault(at=at, name="pg_ctl restart -m immediate",
                 act=lambda: postgres.restart("immediate"))


async def run_faults(faults: list[Fault], started: float) -> None:
    """Start each fault at its time (several may overlap), and wait for all of them."""
    # A thread each: the default executor's few threads would start later faults late.
    with ThreadPoolExecutor(max_workers=len(faults) or 1) as threads:
        loop = asyncio.get_running_loop()

        async def one(fault: Fault) -> None:
            await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
            await loop.run_in_executor(threads, fault.run)
        await asyncio.gather(*(one(fault) for fault in faults))


async def drive(system: RunningSystem, receiver: WebhookReceiver, faults: list[Fault],
                args: argparse.Namespace, kafka_servers: str | None = None,
                ) -> tuple[LoadResult, Verdict, float, list[Whereabouts]]:
    """Register the SDRs, send the load while the faults happen, wait for the offers, check;
    locate the leads whose offer did not come, and (on Apache Kafka, `kafka_servers`) print
    how far each consumer group is behind."""
    async with httpx.AsyncClient(headers=system.admin_headers, timeout=30) as client:
        for number in range(args.sdrs):
            (await client.post(f"{system.url('router')}/v1/sdrs", json={
                "name": f"Rep {number}", "email": f"rep{number}@faults.example",
                "webhook_url": receiver.new_endpoint(),
            })).raise_for_status()
    await asyncio.sleep(1.0)
    started = time.monotonic()
    load, _ = await asyncio.gather(
        send_leads([process.url for process in system.instances["ingest"]],
                   leads=args.leads, rate=args.rate, duplicate_share=args.duplicates,
                   headers=system.admin_headers),
        run_faults(faults, started))
    drained = await wait_until_delivered(receiver, set(load.accepted), args.drain_seconds)
    verdict = await check(system.database_urls["router"], receiver, set(load.accepted))
    missing = sorted(set(load.accepted) - set(offer_deliveries(receiver)))
    whereabouts = await locate(system.database_urls, missing)
    if missing and kafka_servers is not None:
        groups = [f"faults-{name}" for name in ("scorer", "router")]
        for group, behind in (await consumer_lag(kafka_servers, groups)).items():
            print(f"  {group} behind its committed offsets at the end of the drain: "
                  f"{behind or 'nothing'}", flush=True)
    await wait_for_late(receiver, whereabouts, args.late_seconds)
    return load, verdict, drained, whereabouts


def report(title: str, load: LoadResult, verdict: Verdict, drained: float,
           faults: list[Fault], receiver: WebhookReceiver,
           whereabouts: list[Whereabouts]) -> None:
    print(title)
    print(verdict.table())
    print(f"  sent twice (same Idempotency-Key) {load.duplicates_sent}, "
          f"answered with two lead ids: {len(load.duplicates_split)}")
    print(f"  retried: {dict(load.retries) or 'nothing'}; refused: {dict(load.refused) or 'none'}")
    print(f"  all offers delivered {drained:.1f} s after the last lead was sent")
    print("  fault (seconds into the load): back (serving again), recovery (first offer "
          "delivered for a lead acknowledged after the fault)")
    started = min(load.accepted.values(), default=0.0)
    for fault in sorted(faults, key=lambda fault: fault.began_at or 0.0):
        if fault.began_at is None:
            print(f"    {fault.name:<48} never happened")
            continue
        took = recovery_seconds(fault.began_at, load.accepted, receiver)
        back = ("never" if fault.repaired_at is None
                else f"{fault.repaired_at - fault.began_at:5.1f} s")
        print(f"    {fault.name:<48} at {fault.began_at - started:5.1f} s  back {back}  "
              f"recovery {'-' if took is None else f'{took:5.1f} s'}")
    for label, leads in (("lost", verdict.lost), ("doubled", verdict.doubled),
                         ("stuck", verdict.stuck), ("undelivered", verdict.undelivered)):
        if leads:
            print(f"  {label}: {', '.join(leads[:5])}{' ...' if len(leads) > 5 else ''}")
    report_whereabouts(whereabouts, load)


def report_whereabouts(whereabouts: list[Whereabouts], load: LoadResult) -> None:
    """Where each lead without an offer at the end of the drain was, and whether it came."""
    if not whereabouts:
        return
    print(f"  {len(whereabouts)} leads without an offer at the end of the drain:")
    first = min(load.accepted.values())
    for place in sorted(whereabouts, key=lambda place: load.accepted[place.lead_id]):
        came = ("never came" if place.arrived_late is None
                else f"offer came {place.arrived_late:.1f} s later")
        print(f"    {place.lead_id} (acknowledged at {load.accepted[place.lead_id] - first:6.1f} s)"
              f": {place.last_hop()}; {came}"
              + (f"; dead letters: {place.dead_letters}" if place.dead_letters else ""))


def passed(load: LoadResult, verdict: Verdict, faults: list[Fault]) -> bool:
    """Nothing lost, doubled, stuck or undelivered, no lead refused or given up on, and every
    broken part serving again."""
    return verdict.clean and not load.refused and all(
        fault.repaired_at is not None for fault in faults)


def run_embedded(args: argparse.Namespace) -> bool:
    chooser = random.Random(args.seed)
    seconds = args.leads / args.rate
    with ExitStack() as stack:
        data_dir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        broker = stack.enter_context(EmbeddedBroker(free_port()))
        receiver = stack.enter_context(webhook_receiver())
        system = stack.enter_context(running_system(
            bootstrap_servers=broker.bootstrap_servers, data_dir=data_dir,
            topic_prefix="faults", sla_seconds=3600, allowed_webhook_urls=[receiver.base_url]))
        faults = (embedded_broker_faults(broker, seconds)
                  + service_faults(system, args.service_kills, seconds, chooser))
        load, verdict, drained, whereabouts = asyncio.run(
            drive(system, receiver, faults, args))
        report(f"faults, embedded broker + SQLite, one instance of each service: "
               f"{args.leads} hot leads at {args.rate:g}/s", load, verdict, drained, faults,
               receiver, whereabouts)
        return passed(load, verdict, faults)


def run_kafka(args: argparse.Namespace) -> bool:
    chooser = random.Random(args.seed)
    seconds = args.leads / args.rate
    with ExitStack() as stack:
        data_dir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        kafka = stack.enter_context(KafkaCluster(size=3))
        postgres = stack.enter_context(PostgresCluster())
        receiver = stack.enter_context(webhook_receiver())
        system = stack.enter_context(running_system(
            bootstrap_servers=kafka.bootstrap_servers, data_dir=data_dir,
            topic_prefix="faults", sla_seconds=3600,
            database_url=postgres.create_database("faults"),
            allowed_webhook_urls=[receiver.base_url],
            broker_env={**kafka.service_env(),
                        "LEADRELAY_KAFKA_TOPIC_PARTITIONS": str(args.partitions)},
            instances=2))
        faults = [kafka_broker_fault(kafka, 0.25 * seconds),
                  postgres_fault(postgres, 0.55 * seconds),
                  *service_faults(system, args.service_kills, seconds, chooser)]
        load, verdict, drained, whereabouts = asyncio.run(
            drive(system, receiver, faults, args, kafka.bootstrap_servers))
        report(f"faults, Apache Kafka (3 brokers, {args.partitions} partitions) + PostgreSQL, "
               f"two instances of each service: {args.leads} hot leads at {args.rate:g}/s",
               load, verdict, drained, faults, receiver, whereabouts)
        return passed(load, verdict, faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true",
                        help="tansu + SQLite instead of Apache Kafka + PostgreSQL")
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=40.0, help="leads per second")
    parser.add_argument("--duplicates", type=float, default=0.1,
                        help="share of leads sent twice with the same Idempotency-Key")
    parser.add_argument("--sdrs", type=int, default=10)
    parser.add_argument("--service-kills", type=int, default=2,
                        help="kill -9 of each service instance")
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--late-seconds", type=float, default=120.0,
                        help="after the drain, how long to wait for the offers still missing")
    parser.add_argument("--keep", type=Path,
                        help="keep the services' data and logs in this directory")
    parser.add_argument("--partitions", type=int, default=12, help="Apache Kafka only")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.exit(0 if (run_embedded(args) if args.embedded else run_kafka(args)) else 1)


if __name__ == "__main__":
    main()
