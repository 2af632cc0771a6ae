"""`DeliverySignal`: wakes the notification loop (`services.router.notifications`) once a
transaction that queued notifications commits, or hands it rows to send at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.after_commit import defer_until_commit


class DeliverySignal:
    """Wakes the delivery loop once a transaction that queued notifications commits.

    `wake_after_commit` makes the loop claim what is due. `send_after_commit` gives it rows
    the transaction inserted already leased to this process (`offers.queue_notifications`):
    the loop sends them at once, with no claim of its own. If the process dies first, their
    lease ends and any instance's loop claims them like any other due row.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.claim_requested = False
        self.loop_running = False
        """A delivery loop is there to send what `send_after_commit` gives it."""
        self._leased: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()

    def set(self) -> None:
        """Wake the loop to claim what is due."""
        self.claim_requested = True
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wake_after_commit(self, session: AsyncSession) -> None:
        """Wake the loop once `session`'s transaction commits (not on a savepoint release)."""
        defer_until_commit(session, (self, "wake"), None, self._woken)

    def send_after_commit(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """Give `rows` (inserted leased to this process) to the loop once `session` commits."""
        defer_until_commit(session, (self, "rows"), rows, self._given)

    def take_leased(self, limit: int, *, oldest: float) -> list[dict[str, Any]]:
        """Up to `limit` of the rows given by `send_after_commit`, oldest first. Rows given
        before `oldest` (loop time) are dropped: their lease may end before their call would,
        and a loop claims them from the database once it has."""
        rows: list[dict[str, Any]] = []
        while self._leased and len(rows) < limit:
            leased_at, row = self._leased.popleft()
            if leased_at >= oldest:
                rows.append(row)
        return rows

    def _woken(self, _wakes: list[None]) -> None:
        self.set()

    def _given(self, batches: list[list[dict[str, Any]]]) -> None:
        now = asyncio.get_running_loop().time()
        self._leased.extend((now, row) for rows in batches for row in rows)
        self._event.set()

    async def wait(self, seconds: float) -> None:
        """Return when woken, or after `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        self._event.clear()
