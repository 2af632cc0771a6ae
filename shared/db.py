"""Database plumbing: async engines tuned per dialect, one MetaData per service, portable types.

The same code runs on SQLite (embedded default) and PostgreSQL (production). On SQLite every
transaction starts with `BEGIN IMMEDIATE` in WAL mode, so concurrent writers queue on the
busy timeout instead of failing on a lock upgrade, and statements run on the event loop's
thread (`shared.sqlite_driver`); on PostgreSQL rows are claimed with `FOR UPDATE SKIP LOCKED`
(SQLite ignores the clause, and has a single writer anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, Table, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

from shared import sqlite_driver
from shared.clock import as_utc
from shared.outages import is_outage as is_outage  # where the services import it from
from shared.sqlite_writers import writer_turn

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

READ_ONLY_OPTION = "leadrelay_read_only"
"""Execution option: on SQLite, begin a plain (deferred) transaction that takes no write lock."""

JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def service_metadata() -> MetaData:
    """A fresh MetaData with the project's constraint naming convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored and returned as aware UTC, on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, one step straight to the text SQLAlchemy's `DATETIME` stores (its
        default storage format), instead of `process_bind_param` then `DATETIME`'s own
        formatting: most rows a service writes carry several timestamps, and the two steps
        cost about three times as much. `tests/test_library_internals.py` checks the text is
        SQLAlchemy's, to the character."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_datetime_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """On SQLite, the stored text read back in one step, as aware UTC."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime_of

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _sqlite_datetime_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


def _sqlite_datetime_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        # Parsing an offset costs a sixth of `.replace(tzinfo=UTC)` after parsing without one.
        moment = datetime.fromisoformat(value + "+00:00")
    except ValueError:  # text written with its offset (raw SQL): as SQLAlchemy reads it
        moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is UTC else as_utc(moment)


def new_id() -> str:
    return str(uuid.uuid4())


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for `url`, with the per-dialect settings this project relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if parsed.query or not parsed.database:
            # URI options or an in-memory database: aiosqlite, as SQLAlchemy documents them.
            engine = create_async_engine(url, echo=echo, hide_parameters=True,
                                         connect_args={"timeout": 30})
        else:
            engine = create_async_engine(
                url, echo=echo, hide_parameters=True,
                async_creator=sqlite_driver.connect(parsed.database, timeout=30))
        _tune_sqlite(engine)
        return engine
    # hide_parameters: errors and echo never show the values (emails, names) of a statement.
    engine = create_async_engine(
        url, echo=echo, hide_parameters=True, pool_size=10, max_overflow=10, pool_recycle=1800,
        # A service runs a few hundred distinct statements (an IN list of each length is one
        # of its own); past asyncpg's cache of 100, each would be prepared again.
        connect_args={"prepared_statement_cache_size": 1000},
    )
    _ping_idle_connections(engine)
    return engine


IDLE_PING_SECONDS = 10.0
"""A pooled connection unused for this long is pinged before it is handed out."""


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only when it sat idle (SQLAlchemy's `pool_pre_ping`
    pings on every checkout: a round trip more for each transaction). A connection that fails
    its ping is replaced by a new one; one in steady use that the server dropped fails its
    transaction, which the callers treat as an outage (503, or a retry of the loop), and
    SQLAlchemy then renews the whole pool."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("the idle connection failed its ping") from error


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (needed for
        # SAVEPOINT and BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free space (erasure).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def insert_ignoring_conflicts(
    table: Table, dialect_name: str,
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *, index_elements: Sequence[str] | None = None,
) -> Insert:
    """`INSERT ... ON CONFLICT DO NOTHING` for the dialect at hand.

    Without `values`, the statement is meant to be executed with a list of parameter rows: it
    compiles once and is cached, where a multi-row VALUES list is compiled anew each time."""
    module: Any = postgresql if dialect_name == "postgresql" else sqlite
    statement = module.insert(table)
    if values is not None:
        statement = statement.values(values)
    return statement.on_conflict_do_nothing(index_elements=index_elements)  # type: ignore[no-any-return]


_SQLITE_NOW = select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))
_POSTGRESQL_NOW = select(func.clock_timestamp())


async def database_now(session: AsyncSession) -> datetime:
    """The database server's current time, aware UTC: one clock for every process that uses
    the database, whatever their own clocks say (PostgreSQL `clock_timestamp()`, SQLite's
    `'now'` with milliseconds)."""
    if session.get_bind().dialect.name == "sqlite":
        text_now = await session.scalar(_SQLITE_NOW)
        return as_utc(datetime.fromisoformat(str(text_now)))
    found = await session.scalar(_POSTGRESQL_NOW)
    if not isinstance(found, datetime):
        raise TypeError(f"clock_timestamp() gave {found!r}")
    return as_utc(found)


_writer_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def _writer_lock(sqlite_file: str) -> asyncio.Lock:
    """The lock write transactions on `sqlite_file` take turns on, in the running loop."""
    locks = _writer_locks.setdefault(asyncio.get_running_loop(), {})
    if sqlite_file not in locks:
        locks[sqlite_file] = asyncio.Lock()
    return locks[sqlite_file]


class Database:
    """An engine and its session factory; sessions never commit by themselves.

    On SQLite, write transactions on one database file take turns on an asyncio lock per event
    loop, shared by every `Database` of that file: SQLite has a single writer anyway, its busy
    handler polls with growing sleeps, which under concurrency costs far more than queueing
    in the event loop, and `shared.sqlite_driver` runs statements on the loop's thread, where
    waiting for the busy handler would stop the loop. Between processes (the scorer's two
    lanes), they take turns on a `flock` as well (`shared.sqlite_writers`).
    """

    def __init__(self, url: str, *, echo: bool = False, yield_writes: bool = False) -> None:
        self.engine = create_engine(url, echo=echo)
        self.yield_writes = yield_writes
        """SQLite: this process's writes let the other processes' waiting writes go first
        (`shared.sqlite_writers`)."""
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._sqlite_file = (
            str(Path(self.engine.url.database or ":memory:").resolve())
            if self.engine.dialect.name == "sqlite" else None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        if self._sqlite_file is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with _writer_lock(self._sqlite_file), self._other_writers(), \
                self.sessions() as session, session.begin():
            yield session

    def _other_writers(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The turn among the processes writing this SQLite file (`shared.sqlite_writers`)."""
        if self._sqlite_file is None or self._sqlite_file.endswith(":memory:"):
            return contextlib.nullcontext()
        return writer_turn(self._sqlite_file, yields=self.yield_writes)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: it never blocks writers, and is rolled back at the end."""
        async with self.sessions() as session:
            await session.connection(execution_options={READ_ONLY_OPTION: True})
            try:
                yield session
            finally:
                await session.rollback()

    async def truncate_wal(self) -> bool:
        """SQLite: copy the write-ahead log into the database file and empty it, so that pages
        holding rows just erased are gone from the `-wal` file too; False when a reader kept
        it from finishing (try again later). Nothing to do on PostgreSQL."""
        if self._sqlite_file is None or self._sqlite_file.endswith(":memory:"):
            return True
        async with _writer_lock(self._sqlite_file), self._other_writers():
            return await asyncio.to_thread(_truncate_wal, self._sqlite_file)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _truncate_wal(sqlite_file: str) -> bool:
    connection = sqlite3.connect(sqlite_file, timeout=1.0)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0
    finally:
        connection.close()
