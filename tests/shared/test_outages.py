"""`is_outage` on real errors, each produced for real: PostgreSQL starting up, shutting down,
crashing, out of connections; a port where nothing listens; SQLite that cannot open its file,
locked past the busy timeout, full. Bad statements are not outages. `OutageLog` logs an outage
once when it starts and once when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession

from leadrelay.broker import free_port
from leadrelay.harness.postgres import PostgresCluster
from shared.db import Database
from shared.group_commit import WriterStoppedError
from shared.outages import OutageLog, is_outage, outage_cause

Scenario = Callable[[PostgresCluster], Awaitable[BaseException]]


async def failure_of(db: Database, *statements: str) -> BaseException:
    """The error `statements` (`SELECT 1` if none) raise in one transaction of `db` (the test
    fails if they raise none)."""
    try:
        async with db.transaction() as session:
            for statement in statements or ("SELECT 1",):
                await session.execute(text(statement))
    except Exception as error:  # noqa: BLE001 - the error is what the test looks at
        return error
    raise AssertionError(f"{statements} did not fail")


async def connected(cluster: PostgresCluster) -> Database:
    db = Database(cluster.url_of("postgres"))
    async with db.transaction() as session:
        await session.execute(text("SELECT 1"))
    return db


async def nothing_listens(_cluster: PostgresCluster) -> BaseException:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        return await failure_of(db)
    finally:
        await db.dispose()


async def terminated_by_administrator(cluster: PostgresCluster) -> BaseException:
    db = await connected(cluster)
    try:
        async with db.reading() as session:
            backend = await session.scalar(text("SELECT pg_backend_pid()"))
        admin = await asyncpg.connect(cluster.dsn)
        await admin.execute("SELECT pg_terminate_backend($1)", backend)
        await admin.close()
        return await failure_of(db)
    finally:
        await db.dispose()


async def stopped_mid_query(cluster: PostgresCluster, mode: str) -> BaseException:
    db = await connected(cluster)
    try:
        query = asyncio.create_task(failure_of(db, "SELECT pg_sleep(30)"))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(cluster.stop, mode)  # type: ignore[arg-type]
        return await query
    finally:
        await db.dispose()
        await asyncio.to_thread(cluster.start)


async def fast_shutdown_mid_query(cluster: PostgresCluster) -> BaseException:
    return await stopped_mid_query(cluster, "fast")


async def crash_mid_query(cluster: PostgresCluster) -> BaseException:
    return await stopped_mid_query(cluster, "immediate")


async def crash_of_another_backend(cluster: PostgresCluster) -> BaseException:
    db = await connected(cluster)
    try:
        victim = await asyncpg.connect(cluster.dsn)
        os.kill(await victim.fetchval("SELECT pg_backend_pid()"), signal.SIGKILL)
        victim.terminate()
        return await failure_of(db, "SELECT pg_sleep(5)")
    finally:
        await db.dispose()
        await asyncio.to_thread(cluster.wait_until_ready)


async def starting_up(cluster: PostgresCluster) -> BaseException:
    """A connection while the server replays its WAL after a crash: 57P03."""
    db = await connected(cluster)
    try:
        for _ in range(20):
            await asyncio.to_thread(cluster.stop, "immediate")
            await asyncio.to_thread(cluster.start, wait=False)
            while True:
                error = await failure_of_or_none(db)
                if error is None:
                    break
                if isinstance(getattr(getattr(error, "orig", None), "__cause__", None),
                              asyncpg.CannotConnectNowError):
                    return error
                await asyncio.sleep(0.002)
        raise AssertionError("never caught the server starting up")
    finally:
        await db.dispose()
        await asyncio.to_thread(cluster.wait_until_ready)


async def failure_of_or_none(db: Database) -> BaseException | None:
    try:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - the error is what the test looks at
        return error
    return None


async def shutting_down(cluster: PostgresCluster) -> BaseException:
    """A new connection while a smart shutdown waits for its last client: 57P03."""
    holder = await asyncpg.connect(cluster.dsn)
    db = Database(cluster.url_of("postgres"))
    try:
        await asyncio.to_thread(cluster.stop, "smart", wait=False)
        return await failure_of(db)
    finally:
        await db.dispose()
        await holder.close()  # the last client gone, the server stops
        while await asyncio.to_thread(cluster.is_running):
            await asyncio.sleep(0.05)
        await asyncio.to_thread(cluster.start)


async def too_many_connections(cluster: PostgresCluster) -> BaseException:
    admin = await asyncpg.connect(cluster.dsn)
    await admin.execute("CREATE ROLE limited LOGIN CONNECTION LIMIT 1")
    await admin.close()
    url = cluster.url_of("postgres").replace("postgres@", "limited@")
    first, second = Database(url), Database(url)
    try:
        async with first.reading() as session:
            await session.execute(text("SELECT 1"))
            return await failure_of(second)
    finally:
        await first.dispose()
        await second.dispose()


async def used_after_its_connection_died(cluster: PostgresCluster) -> BaseException:
    """A transaction that goes on after a statement of it met a lost connection (as a
    savepoint around a handler lets it)."""
    db = await connected(cluster)
    found: list[BaseException] = []
    try:
        with contextlib.suppress(Exception):  # the commit at the end fails as well
            async with db.transaction() as session:
                backend = await session.scalar(text("SELECT pg_backend_pid()"))
                admin = await asyncpg.connect(cluster.dsn)
                await admin.execute("SELECT pg_terminate_backend($1)", backend)
                await admin.close()
                with pytest.raises(Exception):  # noqa: B017 - whichever the driver raises
                    async with session.begin_nested():
                        await session.execute(text("SELECT 1"))
                found.append(await failure_of_session(session))
    finally:
        await db.dispose()
    return found[0]


async def failure_of_session(session: AsyncSession) -> BaseException:
    try:
        await session.execute(text("SELECT 2"))
    except Exception as error:  # noqa: BLE001 - the error is what the test looks at
        return error
    raise AssertionError("SELECT 2 did not fail")


async def deadlocked(cluster: PostgresCluster) -> BaseException:
    """Two transactions locking two rows in opposite orders (two consumers of one service
    taking the same leads): PostgreSQL aborts one of them, which may simply be tried again."""
    db = await connected(cluster)
    try:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE pair (id int PRIMARY KEY)"))
            await session.execute(text("INSERT INTO pair VALUES (1), (2)"))
        both_hold_one = asyncio.Barrier(2)

        async def lock(first: int, second: int) -> None:
            async with db.transaction() as session:
                for number, row in enumerate((first, second)):
                    await session.execute(
                        text("SELECT id FROM pair WHERE id = :id FOR UPDATE"), {"id": row})
                    if number == 0:
                        await both_hold_one.wait()

        results = await asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True)
    finally:
        await db.dispose()
    failed = [result for result in results if isinstance(result, BaseException)]
    assert len(failed) == 1, results
    return failed[0]


POSTGRES_OUTAGES: list[Scenario] = [
    nothing_listens, terminated_by_administrator, used_after_its_connection_died,
    fast_shutdown_mid_query, crash_mid_query,
    crash_of_another_backend, starting_up, shutting_down, too_many_connections, deadlocked,
]


async def test_postgresql_outages_and_bad_statements(
    postgres_cluster: PostgresCluster,
) -> None:
    outages = {scenario.__name__: await scenario(postgres_cluster)
               for scenario in POSTGRES_OUTAGES}
    db = Database(postgres_cluster.url_of("postgres"))
    try:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE once (id int PRIMARY KEY)"))
        bad = [
            await failure_of(db, "SELEC 1"),
            await failure_of(db, "SELECT 1 / 0"),
            await failure_of(db, "SELECT * FROM nowhere"),
            await failure_of(db, "INSERT INTO once VALUES (1), (1)"),
            await failure_of(db, "SET LOCAL statement_timeout = 1", "SELECT pg_sleep(1)"),
        ]
    finally:
        await db.dispose()

    misread = {name: f"{outage_cause(error)}: {error}" for name, error in outages.items()
               if not is_outage(error)}
    assert not misread, misread
    assert [is_outage(error) for error in bad] == [False] * len(bad), bad
    causes = {name: outage_cause(error) for name, error in outages.items()}
    assert causes["starting_up"] == "CannotConnectNowError 57P03"
    assert causes["shutting_down"] == "CannotConnectNowError 57P03"
    assert causes["too_many_connections"] == "TooManyConnectionsError 53300"
    assert causes["used_after_its_connection_died"] == "PendingRollbackError"
    assert causes["deadlocked"] == "DeadlockDetectedError 40P01"


def test_sqlite_outages_and_bad_statements(tmp_path: Path) -> None:
    outages: dict[str, BaseException] = {}
    a_directory = create_engine(f"sqlite:///{tmp_path}")
    with pytest.raises(Exception) as cannot_open, a_directory.connect():
        pass
    outages["file cannot be opened"] = cannot_open.value

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    holder.execute("BEGIN IMMEDIATE")
    impatient = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with pytest.raises(Exception) as locked, impatient.begin() as connection:
        connection.execute(text("INSERT INTO item (body) VALUES ('x')"))
    outages["locked past the busy timeout"] = locked.value
    holder.execute("ROLLBACK")

    with pytest.raises(Exception) as full, impatient.begin() as connection:
        connection.execute(text("PRAGMA max_page_count = 3"))
        connection.execute(text("INSERT INTO item (body) VALUES (:body)"),
                           [{"body": "x" * 2000}] * 20)
    outages["disk full"] = full.value

    bad: list[BaseException] = []
    for statement in ("SELEC 1", "SELECT * FROM nowhere", "INSERT INTO item (body) VALUES (NULL)",
                      "INSERT INTO item (id, body) VALUES (1, 'a'), (1, 'b')"):
        with pytest.raises(Exception) as raised, impatient.begin() as connection:
            connection.execute(text(statement))
        bad.append(raised.value)
    impatient.dispose()
    a_directory.dispose()
    holder.close()

    assert {name: is_outage(error) for name, error in outages.items()} == dict.fromkeys(
        outages, True), {name: str(error) for name, error in outages.items()}
    assert [is_outage(error) for error in bad] == [False] * len(bad), bad
    assert outage_cause(outages["file cannot be opened"]) == "OperationalError SQLITE_CANTOPEN"


def test_errors_beside_the_database() -> None:
    assert is_outage(WriterStoppedError("the writer stopped"))
    assert is_outage(TimeoutError())
    assert is_outage(ExceptionGroup("all down", [ConnectionResetError(), TimeoutError()]))
    assert not is_outage(ExceptionGroup("a bug too", [ConnectionResetError(), KeyError("x")]))
    assert not is_outage(ValueError("a bug"))
    assert not is_outage(RuntimeError("a bug")) and not is_outage(KeyError("lead"))


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = OutageLog("relay", first_pause=0.2, longest_pause=1.0, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="shared.outages")
    pauses = [outage.failed(ConnectionRefusedError()) for _ in range(6)]
    now[0] = 107.5
    outage.recovered()
    outage.recovered()
    assert pauses == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    noticed = [(record.levelname, record.getMessage()) for record in caplog.records
               if record.levelno >= logging.INFO]
    assert noticed == [
        ("WARNING", "relay: database unavailable (ConnectionRefusedError); retrying until it "
                    "is back"),
        ("INFO", "relay: database reachable again after 7.5 s (6 failed attempts)"),
    ]
    assert not any(record.exc_info for record in caplog.records)
