"""Scale: the highest rate of hot leads the system sustains with 1, 2 and 3 instances of the
scorer and the router, on Apache Kafka (12 partitions) and PostgreSQL.

    python bench/scale.py                         # 1, 2, 3 instances, 60 s per step
    python bench/scale.py --instances 1 2 --seconds 20 --rates 25 50 100

For each instance count one system is started (one ingest, N scorers, N routers, a local
webhook receiver) and rates are tried in increasing order, each for `--seconds`; a rate is
sustained when every lead acknowledged during it reached its SDR's webhook and the p99 from
ingest's 202 to the webhook is under `--p99-limit` (1 s). The first rate that fails ends the
search (`--every-rate` tries them all: on a shared machine one slow step says little). Each
step prints leads/s, the latency figures and the CPU milliseconds per lead of each service (all
its instances together), the broker and PostgreSQL, less what they burn idle (measured for
`--idle-seconds` before the first step: polling, heartbeats, timers), which is what a lead
costs whatever else shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_seconds, machine_ticks, tree_cpu_seconds
from bench.speed_to_route import generate_load, percentile
from leadrelay.harness.kafka import KafkaCluster
from leadrelay.harness.postgres import PostgresCluster
from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver


@dataclass
class Step:
    rate: float
    accepted: int
    arrived: int
    p50_ms: float
    p99_ms: float
    cpu_ms_per_lead: dict[str, float]
    busy: float

    def sustained(self, p99_limit_ms: float) -> bool:
        return self.accepted > 0 and self.arrived == self.accepted and self.p99_ms < p99_limit_ms

    def line(self) -> str:
        cpu = "  ".join(f"{name} {value:.1f}" for name, value in self.cpu_ms_per_lead.items())
        return (f"  {self.rate:6.0f} leads/s  notified {self.arrived}/{self.accepted}  "
                f"p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
                f"cores {self.busy:.0%} busy  CPU ms/lead above idle: {cpu}")


def process_ids(system: RunningSystem, kafka: KafkaCluster,
                postgres: PostgresCluster) -> dict[str, list[int]]:
    """Service name (all its instances), `kafka` (every broker), `postgres` (the postmaster,
    whose backends are counted with it) -> process ids."""
    pids: dict[str, list[int]] = {
        name: [process.process.pid for process in processes if process.process is not None]
        for name, processes in system.instances.items()}
    pids["kafka"] = [broker.process.pid for broker in kafka.brokers if broker.process is not None]
    pids["postgres"] = [postgres.postmaster_pid()]
    return pids


def cpu_by_name(pids: dict[str, list[int]]) -> dict[str, float]:
    used = {}
    for name, ids in pids.items():
        total = 0.0
        for pid in ids:
            try:
                total += tree_cpu_seconds(pid) if name == "postgres" else cpu_seconds(pid)
            except OSError:
                continue
        used[name] = total
    return used


async def idle_cpu(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU seconds per second each part uses with no load."""
    before = cpu_by_name(pids)
    await asyncio.sleep(seconds)
    after = cpu_by_name(pids)
    return {name: (after[name] - before[name]) / seconds for name in pids}


async def one_step(system: RunningSystem, receiver: WebhookReceiver, rate: float,
                   args: argparse.Namespace, pids: dict[str, list[int]],
                   idle: dict[str, float]) -> Step:
    spawn = multiprocessing.get_context("spawn")
    before, ticks, began = cpu_by_name(pids), machine_ticks(), time.monotonic()
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        _, accepted_at, _, _, _ = await asyncio.get_running_loop().run_in_executor(
            pool, generate_load, system.url("ingest"), system.admin_token, rate, args.seconds)
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline and not set(accepted_at) <= set(receiver.arrived_at):
        await asyncio.sleep(0.1)
    # Until every lead arrived (or the drain ended): a lead's work may finish after the load.
    after, ticks_after, ended = cpu_by_name(pids), machine_ticks(), time.monotonic()
    with receiver.lock:
        arrived_at = dict(receiver.arrived_at)
    offset = time.time() - time.monotonic()
    latencies = [(arrived_at[lead] + offset - accepted) * 1000
                 for lead, accepted in accepted_at.items() if lead in arrived_at]
    leads = max(1, len(accepted_at))
    busy = (ticks_after[0] - ticks[0]) / max(1, ticks_after[1] - ticks[1])
    return Step(
        rate=rate, accepted=len(accepted_at), arrived=len(latencies),
        p50_ms=percentile(latencies, 0.5) if latencies else float("inf"),
        p99_ms=percentile(latencies, 0.99) if latencies else float("inf"),
        cpu_ms_per_lead={
            name: max(0.0, after[name] - before[name] - idle[name] * (ended - began)) * 1000
            / leads for name in pids},
        busy=busy)


async def search(system: RunningSystem, receiver: WebhookReceiver, args: argparse.Namespace,
                 pids: dict[str, list[int]]) -> list[Step]:
    async with httpx.AsyncClient(headers=system.admin_headers, timeout=30) as client:
        for number in range(args.sdrs):
            (await client.post(f"{system.url('router')}/v1/sdrs", json={
                "name": f"Rep {number}", "email": f"rep{number}@scale.example",
                "webhook_url": receiver.new_endpoint(),
            })).raise_for_status()
    await asyncio.sleep(2.0)
    idle = await idle_cpu(pids, args.idle_seconds)
    print("  idle CPU ms/s: " + "  ".join(
        f"{name} {value * 1000:.0f}" for name, value in idle.items()), flush=True)
    steps = []
    for rate in args.rates:
        step = await one_step(system, receiver, rate, args, pids, idle)
        print(step.line(), flush=True)
        steps.append(step)
        if not step.sustained(args.p99_limit * 1000) and not args.every_rate:
            break
    return steps


def run(instances: int, args: argparse.Namespace) -> list[Step]:
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        kafka = stack.enter_context(KafkaCluster(size=args.brokers))
        postgres = stack.enter_context(PostgresCluster())
        receiver = stack.enter_context(webhook_receiver())
        system = stack.enter_context(running_system(
            bootstrap_servers=kafka.bootstrap_servers, data_dir=data_dir,
            topic_prefix="scale", sla_seconds=3600,
            database_url=postgres.create_database("scale"),
            allowed_webhook_urls=[receiver.base_url],
            instances={"ingest": 1, "scorer": instances, "router": instances},
            broker_env={**kafka.service_env(),
                        "LEADRELAY_KAFKA_TOPIC_PARTITIONS": str(args.partitions)}))
        print(f"{instances} scorer and {instances} router instance(s), 1 ingest, "
              f"{args.brokers} Kafka broker(s), {args.partitions} partitions, PostgreSQL:",
              flush=True)
        return asyncio.run(search(system, receiver, args,
                                  process_ids(system, kafka, postgres)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rates", type=float, nargs="+",
                        default=[25, 50, 75, 100, 125, 150, 200, 250, 300])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--p99-limit", type=float, default=1.0, help="seconds")
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--sdrs", type=int, default=20)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--every-rate", action="store_true",
                        help="try every rate even after one was not sustained")
    args = parser.parse_args()
    summary = []
    for instances in args.instances:
        steps = run(instances, args)
        sustained = [step for step in steps if step.sustained(args.p99_limit * 1000)]
        summary.append((instances, sustained[-1] if sustained else None))
    print("highest rate sustained (p99 202 -> webhook under "
          f"{args.p99_limit:g} s, nothing lost):")
    for instances, best in summary:
        print(f"  {instances} instance(s): " + ("none" if best is None else best.line().strip()))


if __name__ == "__main__":
    main()
