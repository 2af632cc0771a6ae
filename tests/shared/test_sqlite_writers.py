"""Two processes writing one SQLite file take turns without stopping each other's event loop,
and one that yields lets the other's waiting writes go first."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import Database
from shared.sqlite_writers import waiting_path, writer_turn

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import asyncio, sys, time
from sqlalchemy import text
from shared.db import Database
from shared.sqlite_writers import waiting_path, writer_turn

async def main() -> None:
    db = Database(sys.argv[1])
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO note (who) VALUES ('other process')"))
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))  # a long batch, holding the write lock
        ending = time.time()  # the commit and the turn's release come after this
    print(f"released {ending!r}", flush=True)
    await db.dispose()

asyncio.run(main())
"""

HOLD_SECONDS = 0.8


class Holder:
    """Another process that takes the write lock, holds it for `HOLD_SECONDS`, commits."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, str(HOLD_SECONDS)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "holding"

    def released_at(self) -> float:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert self.process.wait(timeout=10) == 0
        return float(line[1])


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE note (id INTEGER PRIMARY KEY, who TEXT)"))
    return db


async def _longest_gap(stop: asyncio.Event) -> float:
    """The longest the event loop went without running this task, until `stop`."""
    longest, last = 0.0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


async def test_a_writer_waits_for_another_process_off_the_event_loop(
    database: Database,
) -> None:
    holder = await asyncio.to_thread(Holder, database.engine.url.render_as_string())
    stop = asyncio.Event()
    ticking = asyncio.create_task(_longest_gap(stop))
    async with database.transaction() as session:
        began = time.time()
        await session.execute(text("INSERT INTO note (who) VALUES ('this process')"))
    stop.set()
    released = await asyncio.to_thread(holder.released_at)
    async with database.reading() as session:
        order = (await session.scalars(text("SELECT who FROM note ORDER BY id"))).all()
    await database.dispose()
    assert order == ["other process", "this process"]
    assert began >= released
    # SQLite's busy handler would have slept on the loop's thread the whole time.
    assert await ticking < HOLD_SECONDS / 2


async def test_a_writer_cancelled_while_waiting_leaves_the_turn_free(database: Database) -> None:
    holder = await asyncio.to_thread(Holder, database.engine.url.render_as_string())

    async def write(who: str) -> None:
        async with database.transaction() as session:
            await session.execute(text("INSERT INTO note (who) VALUES (:who)"), {"who": who})

    waiting = asyncio.create_task(write("cancelled"))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.to_thread(holder.released_at)
    async with asyncio.timeout(5):
        await write("after")
    second = await asyncio.to_thread(Holder, database.engine.url.render_as_string())
    await asyncio.to_thread(second.released_at)
    async with database.reading() as session:
        order = (await session.scalars(text("SELECT who FROM note ORDER BY id"))).all()
    await database.dispose()
    assert order == ["other process", "after", "other process"]


async def test_a_yielding_writer_waits_while_another_writer_waits_for_its_turn(
    tmp_path: Path,
) -> None:
    sqlite_file = str(tmp_path / "turns.db")
    # What a writer that does not yield holds while it waits for the turn.
    waiting = os.open(waiting_path(sqlite_file), os.O_RDWR | os.O_CREAT)
    fcntl.flock(waiting, fcntl.LOCK_SH)
    entered = asyncio.Event()

    async def write_signals() -> None:
        async with writer_turn(sqlite_file, yields=True):
            entered.set()

    writing = asyncio.create_task(write_signals())
    try:
        await asyncio.sleep(0.3)
        assert not entered.is_set()  # the turn itself is free, yet it lets the other go first
        async with asyncio.timeout(5), writer_turn(sqlite_file):
            pass  # a writer that does not yield is not held up by one that waits
    finally:
        os.close(waiting)
    async with asyncio.timeout(5):
        await writing
    assert entered.is_set()
