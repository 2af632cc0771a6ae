"""SQLite for SQLAlchemy's asyncio engine, run on the event loop's own thread.

SQLAlchemy's `sqlite+aiosqlite` dialect drives a connection object with aiosqlite's interface.
aiosqlite runs every call on a thread of its own: a statement costs four round trips between
threads (open a cursor, execute, fetch, close), each a queue hand-off, a wake-up of the
worker and a wake-up of the event loop. On this project's transactions that is about two
thirds of their CPU time. `connect` gives the dialect an object with the same interface whose
calls run at once, on the caller's thread: a statement on a local SQLite file takes
microseconds, less than one such round trip.

What makes that safe here: a call that must wait for SQLite's write lock blocks the event
loop until the busy timeout. Within one process that cannot happen, because
`shared.db.Database` lets only one write transaction per database file and event loop run at
a time (SQLite has a single writer anyway), and WAL readers never wait for the writer.
Another process writing the same file (a second instance, a script) makes this one's loop
wait while it commits, instead of one of its threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any


class _RunAtOnce:
    """Stands in for aiosqlite's queue of calls: SQLAlchemy's dialect puts one call on it
    (to set the isolation level), with a future to resolve."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as error:  # noqa: BLE001 - handed to whoever awaits the future
            if future is not None:
                future.set_exception(error)
        else:
            if future is not None:
                future.set_result(result)


class Cursor:
    """aiosqlite's cursor interface over a `sqlite3.Cursor`."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        self._cursor.executemany(sql, rows)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        for row in self._cursor:
            yield row

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class Connection:
    """aiosqlite's connection interface over a `sqlite3.Connection`, as the dialect uses it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        """None once closed (the dialect checks it before a commit or a rollback)."""
        self._tx = _RunAtOnce()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def connect(database: str, *, timeout: float) -> Callable[[], Awaitable[Connection]]:
    """An `async_creator` for `create_async_engine`: a new connection to `database`."""

    async def new_connection() -> Connection:
        # check_same_thread=False: the pool may close a connection from another thread.
        return Connection(sqlite3.connect(
            database, timeout=timeout, isolation_level=None, check_same_thread=False))

    return new_connection
