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


@contextlib.asynccontextmanager
async def writer_turn(sqlite_file: str) -> AsyncIterator[None]:
    """Hold the turn to write `sqlite_file` among processes for the block."""
    descriptor = os.open(lock_path(sqlite_file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await _lock(descriptor)
    except BaseException:
        os.close(descriptor)
        raise
    try:
        yield
    finally:
        os.close(descriptor)  # closing the only descriptor of the lock releases it


async def _lock(descriptor: int) -> None:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiting = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX))
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
