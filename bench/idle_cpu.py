"""Idle CPU: what each process of a system with nothing to do burns, in % of one core.

Starts its own system (embedded broker, SQLite, as `signal_storm.py` does), waits `--settle`
seconds, then reads each process's CPU over `--seconds`. With `--profile DIR`, py-spy records
each service meanwhile (idle frames left out), to see which loop is awake.

    python bench/idle_cpu.py
    python bench/idle_cpu.py --seconds 30 --env LEADRELAY_OUTBOX_POLL_SECONDS=2
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.signal_storm import idle_cpu
from bench.speed_to_route import start_broker
from leadrelay.broker import embedded_consumer_env
from leadrelay.local_system import running_system, webhook_receiver


def profile(out: Path, pids: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
         "--duration", str(int(seconds)), "--rate", "200", "--format", "raw",
         "--output", str(out / f"{name}.txt"), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items() if name != "broker"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--profile", help="directory for py-spy profiles of the idle window")
    parser.add_argument("--env", action="append", default=[],
                        help="KEY=VALUE for every service (repeat)")
    args = parser.parse_args()
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bootstrap_servers, broker_env, broker_pids = start_broker(stack, "embedded")
        if args.env:
            broker_env = {**(embedded_consumer_env() if broker_env is None else broker_env),
                          **dict(item.split("=", 1) for item in args.env)}
        receiver = stack.enter_context(webhook_receiver())
        system = stack.enter_context(running_system(
            bootstrap_servers=bootstrap_servers, data_dir=data_dir, topic_prefix="idle",
            sla_seconds=3600,
            allowed_webhook_urls=[receiver.base_url], broker_env=broker_env,
        ))
        pids = {name: service.process.pid for name, service in system.services.items()
                if service.process is not None}
        pids.update(broker_pids)
        print("pids:", pids, flush=True)
        asyncio.run(asyncio.sleep(args.settle))
        recorders = ([] if not args.profile else
                     profile(Path(args.profile), pids, args.seconds))
        cpu = asyncio.run(idle_cpu(pids, args.seconds))
        for recorder in recorders:
            recorder.wait()
    shares = ", ".join(f"{name} {used / cpu.seconds:.1%}" for name, used in cpu.used.items())
    print(f"idle system: {cpu.core_share():.1%} of one core ({shares})")


if __name__ == "__main__":
    main()
