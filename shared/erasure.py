"""What every service erases of a lead beside its own tables, and the SQLite pages after it.

`erase_delivery_records` deletes, in the erasure's transaction, the lead's outbox rows already
published (rows not yet published hold its personal data sealed under a key the erasure
deletes, and still go out, so that the order of its events holds) and its dead letters (kept
whole, they may hold its personal data readable). `WalScrubber` then, once the transaction
committed, checkpoints SQLite's write-ahead log into the database file and empties it:
`PRAGMA secure_delete` (set on every connection, `shared.db`) zeroes the deleted rows in
the database file, and the old pages that still held them leave the `-wal` file.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from shared.after_commit import defer_until_commit
from shared.db import Database
from shared.inbox import InboxTables
from shared.outbox import OutboxTables

logger = logging.getLogger(__name__)


async def erase_delivery_records(
    session: AsyncSession, lead_id: str, *, outbox: OutboxTables, inbox: InboxTables
) -> None:
    """Delete the lead's published outbox rows and its dead letters (both keyed by lead id)."""
    events = outbox.events
    await session.execute(
        delete(events).where(events.c.message_key == lead_id, events.c.published_at.is_not(None))
    )
    await session.execute(delete(inbox.failed).where(inbox.failed.c.message_key == lead_id))


class WalScrubber:
    """Empties a SQLite database's write-ahead log after an erasure commits (retrying while
    readers hold it); nothing on PostgreSQL."""

    def __init__(self, db: Database, *, attempts: int = 50, pause: float = 0.2) -> None:
        self.db = db
        self.attempts = attempts
        self.pause = pause
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.scrubs = 0
        """Checkpoints completed (for tests)."""

    def after_commit(self, session: AsyncSession) -> None:
        """Scrub once `session`'s transaction has committed (not if it rolls back)."""
        if self.db.dialect != "sqlite":
            return
        defer_until_commit(session, (WalScrubber, id(self)), None, self._request)

    def _request(self, _items: list[None]) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._scrub())

    async def _scrub(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            for _ in range(self.attempts):
                try:
                    if await self.db.truncate_wal():
                        self.scrubs += 1
                        break
                except Exception as error:  # noqa: BLE001 - tried again, then reported
                    logger.warning("write-ahead log not emptied: %s", type(error).__name__)
                await asyncio.sleep(self.pause)
            else:
                logger.warning("write-ahead log still in use after an erasure; not emptied")

    async def wait(self) -> None:
        """Wait for a scrub in progress (tests and shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
