"""Group commit: the units of work of concurrent requests applied together in one transaction.

A request hands its unit of work (a function of the session that never commits) to
`GroupCommit.run` and waits. One writer task takes everything queued (at most `max_group`
units), applies the units in arrival order in one transaction and commits; only then does
each `run` return its unit's result (one commit, so the outbox wakes its relay once for the
whole group). While a group commits, the next one queues up: under load many requests share
one commit, and an idle writer starts at once, with no delay to wait for company.

If the group's transaction fails, nothing of it is kept and each unit is applied again alone,
in its own transaction, so one bad unit fails only its own request. When the failure is the
database being unreachable, every unit of the group gets that error at once (the endpoints
answer 503). Two optional hooks let a service batch the
statements of a group: `prepare(session, hints)` runs first with the hints the units were
queued with (what they will touch, to read it all at once), `finish(session)` runs after the
last unit, before the commit (to send queued writes). They run only for groups of two units or
more: a unit alone, and each unit of a failed group, runs in a plain transaction.

Each unit runs with its request's log and trace context (`shared.logs.LogContext`) current;
work that writes events only at `finish` pins it to their lead (`shared.tracing.pin_to_lead`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from shared import tracing
from shared.db import Database, is_outage
from shared.logs import LogContext, current_context, use_context

logger = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]
Prepare = Callable[[AsyncSession, Sequence[Any]], Awaitable[None]]
Finish = Callable[[AsyncSession], Awaitable[None]]


class WriterStoppedError(ConnectionError):
    """The writer stopped before the unit was committed (the service is shutting down)."""


@dataclass
class _Pending:
    work: Work[Any]
    hint: Any
    answer: asyncio.Future[Any]
    context: LogContext | None = None
    """The request's correlation and trace context, current while its work runs."""


class GroupCommit:
    """Queues units of work and commits them in groups; see the module docstring."""

    def __init__(
        self, db: Database, *, max_group: int = 200,
        prepare: Prepare | None = None, finish: Finish | None = None,
    ) -> None:
        self.db = db
        self.max_group = max_group
        self.prepare = prepare
        self.finish = finish
        self.commits = 0
        """Transactions committed by the writer (groups, and units retried alone)."""
        self.largest_group = 0
        self.fallbacks = 0
        """Groups whose transaction failed, so that each unit was applied alone."""
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._running = False

    async def run(self, work: Work[T], hint: Any = None) -> T:
        """Apply `work` in the next group; returns its result once that group committed.

        `hint` (not None) is handed to `prepare` with the other hints of the group."""
        if not self._running:
            # No writer (a script or test without the runtime's loops): a lone transaction.
            async with self.db.transaction() as session:
                return await work(session)
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, hint, answer, current_context()))
        self._arrived.set()
        return await answer

    async def run_writer(self) -> None:
        """The writer loop: run it as one background task per process."""
        self._running = True
        group: list[_Pending] = []
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                while self._queue:
                    group = [self._queue.popleft()
                             for _ in range(min(len(self._queue), self.max_group))]
                    await self._apply(group)
                    group = []
        finally:
            self._running = False
            stopped = WriterStoppedError("the writer stopped before this work was committed")
            for pending in [*group, *self._queue]:
                _fail(pending, stopped)
            self._queue.clear()

    async def _apply(self, group: list[_Pending]) -> None:
        live = [pending for pending in group if not pending.answer.done()]
        if not live:
            return
        try:
            with tracing.contexts_by_lead():
                async with self.db.transaction() as session:
                    if len(live) > 1 and self.prepare is not None:
                        hints = [pending.hint for pending in live if pending.hint is not None]
                        await self.prepare(session, hints)
                    results = [await _in_context(pending, session) for pending in live]
                    if len(live) > 1 and self.finish is not None:
                        await self.finish(session)
        except Exception as error:  # noqa: BLE001 - each unit gets its own outcome below
            if len(live) == 1 or is_outage(error):
                for pending in live:
                    _fail(pending, error)
                return
            self.fallbacks += 1
            logger.info("group of %d failed (%s); applying each alone", len(live),
                        type(error).__name__)
            for pending in live:
                await self._apply_alone(pending)
            return
        self.largest_group = max(self.largest_group, len(live))
        self.commits += 1
        for pending, result in zip(live, results, strict=True):
            _succeed(pending, result)

    async def _apply_alone(self, pending: _Pending) -> None:
        try:
            with tracing.contexts_by_lead():
                async with self.db.transaction() as session:
                    result = await _in_context(pending, session)
        except Exception as error:  # noqa: BLE001 - the error belongs to this unit's request
            _fail(pending, error)
            return
        self.commits += 1
        _succeed(pending, result)


async def _in_context(pending: _Pending, session: AsyncSession) -> Any:
    use_context(pending.context)
    try:
        return await pending.work(session)
    finally:
        use_context(None)


def _succeed(pending: _Pending, result: Any) -> None:
    if not pending.answer.done():
        pending.answer.set_result(result)


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.answer.done():
        pending.answer.set_exception(error)
