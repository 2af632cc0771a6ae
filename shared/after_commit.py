"""Work held back until a session's transaction commits: wake-ups, hand-overs, metric counts.

A service learns during a transaction what it should do once the transaction is durable (wake
a loop, hand rows to it, count an assignment). `defer_until_commit` holds each such item with
the transaction, or savepoint, that produced it: the outermost commit hands the items to their
callback, a savepoint rolled back drops the items it produced, and a rollback drops them all.
So nothing is done, or counted, for work the database did not keep.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

T = TypeVar("T")

_HELD = "shared.after_commit.held"


class _Held:
    """The items of one kind held in a session, each with the transaction that produced it."""

    __slots__ = ("deliver", "items")

    def __init__(self, deliver: Callable[[list[Any]], None]) -> None:
        self.deliver = deliver
        self.items: list[tuple[SessionTransaction | None, Any]] = []


def defer_until_commit(
    session: AsyncSession, key: Hashable, item: T, deliver: Callable[[list[T]], None]
) -> None:
    """Hold `item` until `session`'s outermost transaction commits, then call `deliver` once
    with every item held under `key`, in the order they came. The first `deliver` given for
    a `key` in a transaction is the one called."""
    sync_session = session.sync_session
    held: dict[Hashable, _Held] | None = sync_session.info.get(_HELD)
    if held is None:
        held = sync_session.info[_HELD] = {}
        if not event.contains(sync_session, "after_commit", _on_commit):
            event.listen(sync_session, "after_commit", _on_commit)
            event.listen(sync_session, "after_soft_rollback", _on_rollback)
    kind = held.get(key)
    if kind is None:
        kind = held[key] = _Held(deliver)
    kind.items.append((sync_session.get_nested_transaction(), item))


def _on_commit(committed: Session) -> None:
    if committed.in_nested_transaction():
        return
    held: dict[Hashable, _Held] | None = committed.info.pop(_HELD, None)
    for kind in (held or {}).values():
        kind.deliver([item for _, item in kind.items])


def _on_rollback(rolled_back: Session, previous: SessionTransaction) -> None:
    held: dict[Hashable, _Held] | None = rolled_back.info.get(_HELD)
    if held is None:
        return
    if previous.nested:
        for kind in held.values():
            kind.items = [(made_in, item) for made_in, item in kind.items
                          if not _within(made_in, previous)]
    elif previous.parent is None:
        rolled_back.info.pop(_HELD, None)


def _within(transaction: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False
