"""The database plumbing: SQLite on the loop's thread, and idle PostgreSQL connections pinged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from shared import db as shared_db
from shared.db import Database, is_outage
from tests.shared.conftest import METADATA, OUTBOX


async def test_two_databases_of_one_sqlite_file_take_turns_without_stopping_the_loop(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = Database(url), Database(url)
    async with first.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    ticks = 0
    order: list[str] = []

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def hold(database: Database, name: str, seconds: float) -> None:
        async with database.transaction() as session:
            order.append(f"{name} began")
            await session.execute(OUTBOX.shards.insert().values(shard=len(order)))
            await asyncio.sleep(seconds)
        order.append(f"{name} committed")

    ticker = asyncio.create_task(tick())
    try:
        started = asyncio.get_running_loop().time()
        await asyncio.gather(hold(first, "first", 0.3), hold(second, "second", 0.0))
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        ticker.cancel()
    # The second writer waited on the lock in the loop, not in SQLite's busy handler, which
    # would have stopped the loop (no ticks) until the first one committed.
    assert order == ["first began", "first committed", "second began", "second committed"]
    assert ticks >= 0.5 * elapsed / 0.01
    async with second.reading() as session:
        assert await session.scalar(select(func.count()).select_from(OUTBOX.shards)) == 2
    await first.dispose()
    await second.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("idle_ping_seconds, replaced", [(0.0, True), (3600.0, False)])
async def test_an_idle_connection_the_server_dropped_is_replaced_after_its_ping(
    database: Database, monkeypatch: pytest.MonkeyPatch, idle_ping_seconds: float,
    replaced: bool,
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("pings are for PostgreSQL connections")
    async with database.reading() as session:
        backend = await session.scalar(select(func.pg_backend_pid()))
    killer = Database(database.engine.url.render_as_string(hide_password=False))
    async with killer.reading() as session:
        assert await session.scalar(select(func.pg_terminate_backend(backend)))
    await killer.dispose()
    monkeypatch.setattr(shared_db, "IDLE_PING_SECONDS", idle_ping_seconds)

    if replaced:
        async with database.reading() as session:
            assert await session.scalar(select(func.pg_backend_pid())) != backend
        return
    with pytest.raises(Exception) as raised:  # whichever error the driver raises
        async with database.reading() as session:
            await session.execute(text("SELECT 1"))
    assert is_outage(raised.value)
