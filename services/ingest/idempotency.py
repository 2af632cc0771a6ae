"""`Idempotency-Key` with Stripe's semantics, for the JSON APIs.

The first answer to a key is stored in the same transaction as the work it describes, so a
crash either keeps both or neither. The same key with the same body replays that answer; with
another body it is a `422`; while the first request is still running in this process, `409`.
Across processes, the key's primary key decides: the loser of a race rolls back and replays
the winner's answer. Keys are scoped (per source) and kept `LEADRELAY_IDEMPOTENCY_HOURS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from shared.clock import Clock
from shared.db import Database
from shared.group_commit import GroupCommit
from shared.problems import ProblemError

Work = Callable[[AsyncSession], Awaitable[tuple[int, Any]]]
"""Does the request's work in the session; returns the status code and the JSON answer."""


def body_hash(body: bytes) -> str:
    """The same JSON document hashes the same, whatever its spacing or key order."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentRequests:
    """Runs a request's work (through `writes`, a group commit) under its Idempotency-Key."""

    def __init__(self, db: Database, clock: Clock, writes: GroupCommit | None = None) -> None:
        self.db = db
        self.clock = clock
        self.writes = writes or GroupCommit(db)
        self._in_flight: set[tuple[str, str]] = set()

    async def run(
        self, scope: str, key: str | None, body: bytes, work: Work, *, hint: Any = None
    ) -> tuple[int, Any]:
        """`hint`: what the work touches, for the group commit to read ahead."""
        if key is None:
            return await self.writes.run(work, hint)
        if (scope, key) in self._in_flight:
            raise ProblemError(409, "Request in flight",
                               "A request with this Idempotency-Key is still being processed.",
                               slug="idempotency-in-flight")
        digest = body_hash(body)
        replay = await self._replay(scope, key, digest)
        if replay is not None:
            return replay
        self._in_flight.add((scope, key))

        async def work_and_answer(session: AsyncSession) -> tuple[int, Any]:
            status_code, answer = await work(session)
            await repository.save_idempotent_response(
                session, scope=scope, key=key, request_hash=digest,
                status_code=status_code, response=answer, now=self.clock.now(),
            )
            return status_code, answer

        try:
            return await self.writes.run(work_and_answer, hint)
        except IntegrityError:
            replay = await self._replay(scope, key, digest)
            if replay is None:
                raise
            return replay
        finally:
            self._in_flight.discard((scope, key))

    async def _replay(self, scope: str, key: str, digest: str) -> tuple[int, Any] | None:
        async with self.db.reading() as session:
            row = await repository.find_idempotent_response(session, scope, key)
        if row is None:
            return None
        if row["request_hash"] != digest:
            raise ProblemError(422, "Idempotency key reused",
                               "This Idempotency-Key was used with another request body.",
                               slug="idempotency-key-reused")
        return int(row["status_code"]), row["response"]
