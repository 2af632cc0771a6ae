"""Database outages: telling them from bad statements, and logging them once, not per retry.

`is_outage(error)` is True when the database could not do the work at all: not reachable,
starting up, shutting down, crashed, out of connections or of disk, or locked past the busy
timeout. Callers answer `503` with `Retry-After` (the HTTP APIs) or try again later (the
background loops); any other database error is a bug or bad data and is handled as such.

It decides by exception class and error code, never by message text: the SQLSTATE PostgreSQL
sends (asyncpg's `CannotConnectNowError` is 57P03, `AdminShutdownError` 57P01, class 08 the
connection exceptions...), SQLite's result code (`SQLITE_CANTOPEN`, `SQLITE_IOERR`,
`SQLITE_BUSY`...), the socket errors (`OSError`, `TimeoutError`), and what SQLAlchemy knows
(a connection it invalidated, a transaction used after that, a pool timeout). SQLAlchemy
wraps the driver's error (`orig`), and the driver wraps the socket's (`__cause__`): the whole
chain is looked at.

A transaction aborted for a deadlock or a serialization failure counts as one too: for the
caller it is the same, the work was not done and may be tried again as it is.

`OutageLog` gives a background loop one warning when an outage starts, one info line when it
ends, and a growing pause between attempts while it lasts.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator

import asyncpg
from sqlalchemy import exc

logger = logging.getLogger(__name__)

OUTAGE_SQLSTATES = frozenset({
    "25006",  # read_only_sql_transaction: the address now leads to a standby (failover)
    "53000", "53100", "53200", "53300",  # insufficient resources: disk, memory, connections
    "57P01", "57P02", "57P03",  # admin shutdown, crash shutdown, cannot connect now
    "57P05",  # idle_session_timeout: the server closed the connection
    "58000", "58030",  # system error, I/O error
    # A transaction PostgreSQL aborted to let another through: nothing wrong with it, try again.
    # Two consumers of one service (the scorer's lanes) may lock the same leads.
    "40001", "40P01",  # serialization failure, deadlock detected
})
"""SQLSTATEs of an outage, besides class 08 (connection exception), which is one whole."""

OUTAGE_SQLITE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,  # locked past the busy timeout
    sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
})
"""SQLite primary result codes of an outage (extended codes carry one in their low byte)."""

INVALIDATED_TRANSACTION = "8s2b"
"""SQLAlchemy's error code for a statement in a transaction whose connection was invalidated
(a disconnect): "Can't reconnect until invalid transaction is rolled back"."""

_DRIVER_MODULES = ("sqlalchemy.", "asyncpg.", "sqlite3", "aiosqlite.", "psycopg")


def is_outage(error: BaseException) -> bool:
    """True when `error` means the database could not be used, as opposed to a bad statement."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_outage(inner) for inner in error.exceptions)
    return any(_means_unavailable(cause) for cause in _database_causes(error))


def outage_cause(error: BaseException) -> str:
    """What a log line says of an outage: the driver's or the socket's error and its code,
    e.g. `CannotConnectNowError 57P03`, `OperationalError SQLITE_CANTOPEN`."""
    deepest = list(_database_causes(error))[-1]
    code = _sqlstate(deepest) or getattr(deepest, "sqlite_errorname", None)
    return f"{type(deepest).__name__} {code}" if code else type(deepest).__name__


def _database_causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what the database layers say caused it: SQLAlchemy's `orig`, then the
    driver's `__cause__` (asyncpg's error over the socket's)."""
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            return
        yield current
        if isinstance(current, exc.StatementError) and current.orig is not None:
            current = current.orig
        elif type(current).__module__.startswith(_DRIVER_MODULES):
            current = current.__cause__
        else:
            return


def _means_unavailable(error: BaseException) -> bool:
    if isinstance(error, OSError | exc.DisconnectionError | exc.TimeoutError):
        return True  # sockets, timeouts; a connection that failed its ping; a pool timeout
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.PendingRollbackError) and error.code == INVALIDATED_TRANSACTION:
        return True  # a transaction went on after its connection was lost
    if isinstance(error, sqlite3.Error):
        return error.sqlite_errorcode & 0xFF in OUTAGE_SQLITE_CODES
    if isinstance(error, exc.OperationalError):
        # PEP 249's class for failures outside the program's control (psycopg's failed
        # connections); SQLite's also holds syntax errors, so its code decides instead.
        return not isinstance(error.orig, sqlite3.Error)
    if isinstance(error, exc.InterfaceError | asyncpg.InterfaceError):
        return True  # the client's side of a closed connection ("connection is closed")
    sqlstate = _sqlstate(error)
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in OUTAGE_SQLSTATES)


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


class OutageLog:
    """One background loop's account of a database outage.

    `failed(error)` at each failed attempt: the first logs a warning, the others only a debug
    line; it returns how long to wait before the next attempt (doubling from `first_pause` up
    to `longest_pause`). `recovered()` after an attempt that worked: one info line if an
    outage was going on, with how long it lasted."""

    def __init__(
        self, name: str, *, first_pause: float = 0.2, longest_pause: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.first_pause = first_pause
        self.longest_pause = longest_pause
        self.clock = clock
        self.failures = 0
        """Failed attempts since the outage started; 0 when there is none."""
        self._started_at = 0.0

    @property
    def ongoing(self) -> bool:
        return self.failures > 0

    def failed(self, error: BaseException) -> float:
        if not self.failures:
            self._started_at = self.clock()
            logger.warning("%s: database unavailable (%s); retrying until it is back",
                           self.name, outage_cause(error))
        else:
            logger.debug("%s: database still unavailable (%s)", self.name, outage_cause(error))
        self.failures += 1
        return min(self.first_pause * 2.0 ** (self.failures - 1), self.longest_pause)

    def recovered(self) -> None:
        if not self.failures:
            return
        logger.info("%s: database reachable again after %.1f s (%d failed attempts)",
                    self.name, self.clock() - self._started_at, self.failures)
        self.failures = 0
