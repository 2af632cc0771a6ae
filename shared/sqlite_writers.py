"""Turns between the processes that write one SQLite file.

SQLite lets one writer in at a time. A second process that finds the file locked waits in
SQLite's busy handler, which sleeps between tries (1, 2, 5 ... 100 ms): it is woken late, can
be overtaken again and again by a writer that commits and begins at once, and, since
`shared.sqlite_driver` runs statements on the event loop's thread, it stops that loop while it
sleeps. Two processes write one file when a service runs a lane of its own (the scorer's
`signals` process), so before `BEGIN IMMEDIATE` each write transaction takes an exclusive
`flock` on `<file>-writers.lock`: a waiter sleeps in the kernel, off the event loop, and is
woken as soon as the lock is released. The lock is only a queue: SQLite's own locking still
guarantees that one writer is in at a time.

A lock has no queue order, and a process that writes batch after batch would often take it
again before a woken waiter does. So a process whose writes can wait (`yields`: the scorer's
`signals` process) gives way: the others hold a shared `flock` on `<file>-writers.waiting`
while they wait for their turn, and a yielding writer first waits until nobody holds that
one. A new lead then waits for at most the one batch being written when it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator


def lock_path(sqlite_file: str) -> str:
    """The file whose `flock` the writers of `sqlite_file` take turns on."""
    return f"{sqlite_file}-writers.lock"


def waiting_path(sqlite_file: str) -> str:
    """The file the writers that do not yield hold (shared) while they wait for their turn."""
    return f"{sqlite_file}-writers.waiting"


@contextlib.asynccontextmanager
async def writer_turn(sqlite_file: str, *, yields: bool = False) -> AsyncIterator[None]:
    """Hold the turn to write `sqlite_file` among processes for the block; `yields`: let every
    writer already waiting that does not yield go first."""
    descriptor = _open(lock_path(sqlite_file))
    try:
        if yields:
            await _wait_until_nobody_waits(sqlite_file)
            await _lock(descriptor, fcntl.LOCK_EX)
        else:
            waiting = _open(waiting_path(sqlite_file))
            try:
                await _lock(waiting, fcntl.LOCK_SH)  # blocks only for an instant, see above
                await _lock(descriptor, fcntl.LOCK_EX)
            finally:
                os.close(waiting)
    except BaseException:
        os.close(descriptor)
        raise
    try:
        yield
    finally:
        os.close(descriptor)  # closing the only descriptor of the lock releases it


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


async def _wait_until_nobody_waits(sqlite_file: str) -> None:
    """Return once no writer that does not yield waits for its turn (the exclusive lock is
    granted then, and given back at once: a waiter's shared lock is held up for no longer)."""
    waiting = _open(waiting_path(sqlite_file))
    try:
        await _lock(waiting, fcntl.LOCK_EX)  # granted once no shared holder is left
    finally:
        os.close(waiting)


async def _lock(descriptor: int, operation: int) -> None:
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiting = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, descriptor, operation))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        # The caller closes the descriptor while the thread still waits: the kernel's wait
        # keeps the file open, and the lock it may still take goes with the file when the
        # wait returns, so nobody is left holding it.
        waiting.add_done_callback(_drop_result)
        raise


def _drop_result(waiting: asyncio.Future[None]) -> None:
    if not waiting.cancelled():
        waiting.exception()  # EBADF or none: nothing to report for a transaction not begun
