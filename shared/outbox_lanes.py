"""The outbox relay's lanes: rows bound for the fast topics go out before every other row.

A service whose outbox also carries bulk traffic (ingest's campaign signals) names its fast
topics (new leads, buying signals). Each round the relay takes the pending rows of those topics
first, in id order, and fills the rest of the round with the other rows, in id order; so a new
lead's event never waits behind a signal backlog, and each topic's rows (hence each lead's rows
within a lane) still go out in the order they were written. Across lanes no order is kept:
they are separate topics, which no consumer reads in one order anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Generic, Protocol, TypeVar


class LaneRow(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def topic(self) -> str: ...


RowT = TypeVar("RowT", bound=LaneRow)


class LaneQueue(Generic[RowT]):
    """Rows not yet taken, per lane, each in id order (SQLite's hand-over path: the rows this
    process committed that no round has taken yet)."""

    def __init__(self, fast_topics: Collection[str]) -> None:
        self.fast_topics = frozenset(fast_topics)
        self._fast: list[RowT] = []
        self._others: list[RowT] = []

    def __len__(self) -> int:
        return len(self._fast) + len(self._others)

    def extend(self, rows: Sequence[RowT]) -> None:
        """Queue `rows`, which follow every row queued before in id order."""
        for row in rows:
            (self._fast if row.topic in self.fast_topics else self._others).append(row)

    def take(self, limit: int) -> list[RowT]:
        """At most `limit` rows, the fast lane's first."""
        fast = self._fast[:limit]
        del self._fast[:limit]
        room = limit - len(fast)
        others = self._others[:room]
        del self._others[:room]
        return fast + others

    def clear(self) -> None:
        self._fast.clear()
        self._others.clear()
