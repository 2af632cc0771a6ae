"""`leadrelay.quiet_server.QuietServer`, run in a process of its own as `leadrelay serve` runs
it: an idle server wakes once a second, keeps its `Date` header current and stops at once on
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from leadrelay.broker import free_port, wait_for_port

SERVER = """
import sys
import uvicorn
from fastapi import FastAPI
from leadrelay.quiet_server import QuietServer

app = FastAPI()
ticks = []

@app.get("/ticks")
async def counted() -> list[int]:
    return ticks

server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]),
                                    log_config=None))
on_tick = server.on_tick

async def tick(counter: int) -> bool:
    ticks.append(counter)
    return await on_tick(counter)

server.on_tick = tick
server.run()
"""


def test_an_idle_server_ticks_once_a_second_and_stops_at_once_on_sigterm() -> None:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                               env={**os.environ, "PYTHONPATH": str(root)})
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            first = client.get("/ticks")
            time.sleep(2.5)
            later = client.get("/ticks")
            while len(client.get("/ticks").json()) == len(later.json()):
                time.sleep(0.02)  # until the next tick: the one after is a second away
        ticks = later.json()[len(first.json()):]
        assert 2 <= len(ticks) <= 4, ticks  # uvicorn's own loop ticks 10 times a second
        assert all(counter % 10 == 0 for counter in ticks)  # each tick renews the headers
        moved = parsedate_to_datetime(later.headers["date"]) - parsedate_to_datetime(
            first.headers["date"])
        assert moved.total_seconds() >= 2

        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert time.monotonic() - asked < 0.6  # not at the next tick, a second away
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
