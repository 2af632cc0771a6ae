"""Work held until commit: handed over on the outermost commit, dropped with what rolled back."""

from __future__ import annotations

import contextlib

from sqlalchemy import func, select

from shared.after_commit import defer_until_commit
from shared.db import Database
from tests.shared.conftest import OUTBOX


async def test_items_reach_their_callback_once_when_the_outermost_transaction_commits(
    database: Database,
) -> None:
    handed: list[list[str]] = []
    async with database.transaction() as session:
        defer_until_commit(session, "names", "ada", handed.append)
        async with session.begin_nested():
            defer_until_commit(session, "names", "grace", handed.append)
        assert handed == []
        defer_until_commit(session, "names", "alan", handed.append)
    assert handed == [["ada", "grace", "alan"]]

    async with database.transaction() as session:
        await session.execute(select(func.count()).select_from(OUTBOX.events))
    assert handed == [["ada", "grace", "alan"]]


async def test_a_rolled_back_savepoint_drops_only_what_it_and_its_savepoints_held(
    database: Database,
) -> None:
    handed: list[list[str]] = []
    async with database.transaction() as session:
        defer_until_commit(session, "names", "kept before", handed.append)
        with contextlib.suppress(LookupError):
            async with session.begin_nested():
                await session.execute(OUTBOX.shards.insert().values(shard=1))
                defer_until_commit(session, "names", "dropped", handed.append)
                async with session.begin_nested():
                    defer_until_commit(session, "names", "dropped inside", handed.append)
                raise LookupError("roll the savepoint back")
        defer_until_commit(session, "names", "kept after", handed.append)
    assert handed == [["kept before", "kept after"]]


async def test_a_rolled_back_transaction_drops_everything_and_each_key_is_handed_apart(
    database: Database,
) -> None:
    handed: list[tuple[str, list[int]]] = []
    with contextlib.suppress(LookupError):
        async with database.transaction() as session:
            defer_until_commit(session, "a", 1, lambda items: handed.append(("a", items)))
            raise LookupError("roll back")
    assert handed == []

    async with database.transaction() as session:
        defer_until_commit(session, "a", 2, lambda items: handed.append(("a", items)))
        defer_until_commit(session, "b", 3, lambda items: handed.append(("b", items)))
        defer_until_commit(session, "a", 4, lambda items: handed.append(("a", items)))
    assert handed == [("a", [2, 4]), ("b", [3])]
