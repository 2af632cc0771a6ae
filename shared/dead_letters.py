"""Dead letters: the consumed events a service could not apply, listed, shown, replayed, purged.

The consumer keeps each message it cannot apply whole in the service's failed-event table
(`shared.inbox`, `shared.consumer`). These admin routes, the same on every service, let an
operator look at them and, once the cause is fixed (a new version deployed, a missing row
created), apply them again:

- `GET /v1/dead-letters`: newest first, a page at a time (`?before=`);
- `GET /v1/dead-letters/{id}`: the message as it came (key, payload) and the whole error;
- `POST /v1/dead-letters/{id}/replay`: in one transaction the dead letter is taken out of the
  table and the event applied as the consumer applies it: opened with its lead's key, recorded
  in the processed-event table, handled. A handler that fails leaves the whole transaction
  undone: the dead letter stays, with the new error (`409`). An event of an erased lead, or
  of a type the service no longer handles, is `skipped` and the dead letter dropped;
- `DELETE /v1/dead-letters/{id}` and `DELETE /v1/dead-letters?up_to=ID`: drop one, or every
  one up to an id the operator has seen (so none that arrived since is dropped unseen).

A handler failure records the event as processed in the same transaction as its dead letter
(so a redelivery does not fail again); a replay deletes that record first, or the event would
be a duplicate of itself.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping

from shared.events import UndecodableEventError, decode_event
from shared.outages import is_outage
from shared.problems import PROBLEM_MEDIA_TYPE, ProblemError
from shared.runtime import ServiceRuntime

PAGE_SIZE = 50
ID_BOUND = 2**63 - 1
ERROR_SUMMARY_CHARACTERS = 300


class DeadLetter(BaseModel):
    id: int
    consumer: str = Field(description="The consumer that failed to apply it (the service)")
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="The message key: the lead id")
    event_id: str | None = Field(description="From the payload; null if it is not JSON")
    event_type: str | None = Field(description="From the payload; null if it is not JSON")
    failed_at: datetime
    error: str = Field(description="The error's last line")


class DeadLetterDetail(DeadLetter):
    payload: str = Field(description="The message value as it was consumed (personal fields "
                                     "sealed, as in the broker)")
    full_error: str = Field(description="The whole error (a traceback for a handler failure)")


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetter]
    next_before: int | None = Field(
        description="Pass it as `before` for the next (older) page; null on the last page")


class DeadLetterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=PAGE_SIZE, ge=1, le=500)
    before: int | None = Field(default=None, ge=1, le=ID_BOUND,
                               description="Dead letters older than this id")


class PurgeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to: int = Field(ge=1, le=ID_BOUND, description=(
        "Drop the dead letters whose id is at most this (the newest one listed), so none that "
        "arrived since is dropped unseen"))


class ReplayOutcome(BaseModel):
    id: int
    outcome: Literal["applied", "skipped"] = Field(
        description="`applied`: the event's effect is committed; `skipped`: an erased lead's "
                    "event, or a type this service no longer handles (the dead letter is "
                    "dropped either way)")
    event_id: str | None
    event_type: str | None


class Purged(BaseModel):
    purged: int


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {
        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


INVALID: dict[int | str, dict[str, Any]] = {
    422: _problem("A parameter is invalid (one entry per parameter)")}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **INVALID, 404: _problem("No dead letter with this id")}
LetterId = Annotated[int, Path(ge=1, le=ID_BOUND)]


def dead_letter_routes(guard: Depends) -> APIRouter:
    """The routes above, behind `guard` (the admin check)."""
    routes = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"], dependencies=[guard])

    @routes.get("", response_model=DeadLetterPage, responses=INVALID,
                summary="Dead letters, newest first")
    async def list_dead_letters(
        request: Request, query: Annotated[DeadLetterQuery, Query()]
    ) -> DeadLetterPage:
        runtime = _runtime(request)
        table = runtime.inbox_tables.failed
        statement = select(table).order_by(table.c.id.desc()).limit(query.limit + 1)
        if query.before is not None:
            statement = statement.where(table.c.id < query.before)
        async with runtime.db.reading() as session:
            rows = (await session.execute(statement)).mappings().all()
        letters = [_summary(row) for row in rows[:query.limit]]
        more = len(rows) > query.limit
        return DeadLetterPage(dead_letters=letters, next_before=letters[-1].id if more else None)

    @routes.get("/{letter_id}", response_model=DeadLetterDetail, responses=NOT_FOUND,
                summary="One dead letter: the message and the whole error")
    async def show_dead_letter(request: Request, letter_id: LetterId) -> DeadLetterDetail:
        runtime = _runtime(request)
        table = runtime.inbox_tables.failed
        async with runtime.db.reading() as session:
            row = (await session.execute(
                select(table).where(table.c.id == letter_id))).mappings().first()
        if row is None:
            raise _not_found(letter_id)
        return DeadLetterDetail(**_summary(row).model_dump(), payload=row["payload"],
                                full_error=row["error"])

    @routes.post("/{letter_id}/replay", response_model=ReplayOutcome, responses={
        **NOT_FOUND, 409: _problem("The event still cannot be applied; the dead letter stays, "
                                   "with this error")},
                 summary="Apply the event again, through the consumer's idempotent path")
    async def replay_dead_letter(request: Request, letter_id: LetterId) -> ReplayOutcome:
        return await replay(_runtime(request), letter_id)

    @routes.delete("/{letter_id}", status_code=204, response_class=Response,
                   responses=NOT_FOUND, summary="Drop one dead letter")
    async def purge_dead_letter(request: Request, letter_id: LetterId) -> Response:
        runtime = _runtime(request)
        table = runtime.inbox_tables.failed
        async with runtime.db.transaction() as session:
            gone = (await session.execute(delete(table).where(table.c.id == letter_id)
                                          .returning(table.c.id))).first()
        if gone is None:
            raise _not_found(letter_id)
        return Response(status_code=204)

    @routes.delete("", response_model=Purged, responses=INVALID,
                   summary="Drop every dead letter up to an id")
    async def purge_dead_letters(
        request: Request, query: Annotated[PurgeQuery, Query()]
    ) -> Purged:
        runtime = _runtime(request)
        table = runtime.inbox_tables.failed
        async with runtime.db.transaction() as session:
            gone = (await session.execute(
                delete(table).where(table.c.id <= query.up_to).returning(table.c.id))).all()
        return Purged(purged=len(gone))

    return routes


async def replay(runtime: ServiceRuntime, letter_id: int) -> ReplayOutcome:
    """Apply dead letter `letter_id` again; `ProblemError` 404 or 409 when it cannot be."""
    table = runtime.inbox_tables.failed
    async with runtime.db.reading() as session:
        peek = (await session.execute(
            select(table.c.message_key).where(table.c.id == letter_id))).first()
    if peek is None:
        raise _not_found(letter_id)
    if runtime.keyring is not None and peek.message_key:
        await runtime.keyring.prefetch([peek.message_key])
    try:
        return await _apply_again(runtime, letter_id)
    except ProblemError:
        raise
    except Exception as error:
        if is_outage(error):
            raise
        problem = _last_line(str(error)) or type(error).__name__
        if not isinstance(error, UndecodableEventError):
            problem = f"{type(error).__name__}: {problem}"
        async with runtime.db.transaction() as session:
            await session.execute(update(table).where(table.c.id == letter_id).values(
                error=f"replayed at {runtime.clock.now().isoformat()}: {problem}"[-4000:],
                failed_at=runtime.clock.now()))
        raise ProblemError(409, "Still failing", f"The event still cannot be applied: "
                           f"{problem}", slug="dead-letter-still-failing") from None


async def _apply_again(runtime: ServiceRuntime, letter_id: int) -> ReplayOutcome:
    table = runtime.inbox_tables.failed
    processed = runtime.inbox_tables.processed
    keys = runtime.keyring.key_of if runtime.keyring is not None else None
    async with runtime.db.transaction() as session:
        # Taken out first: a second replay of the same letter finds nothing (404), never
        # applies it twice.
        row = (await session.execute(delete(table).where(table.c.id == letter_id)
                                     .returning(*table.c))).mappings().first()
        if row is None:
            raise _not_found(letter_id)
        summary = _summary(row)
        event = decode_event(row["payload"].encode(), runtime.handlers, keys)
        if event is None:
            return ReplayOutcome(id=letter_id, outcome="skipped", event_id=summary.event_id,
                                 event_type=summary.event_type)
        event_id = str(event.event_id)
        await session.execute(delete(processed).where(
            processed.c.consumer == row["consumer"], processed.c.event_id == event_id))
        await session.execute(insert(processed).values(
            consumer=row["consumer"], event_id=event_id, event_type=event.type,
            processed_at=runtime.clock.now()))
        await runtime.handlers[event.type](session, event)
    return ReplayOutcome(id=letter_id, outcome="applied", event_id=event_id,
                         event_type=event.type)


def _summary(row: RowMapping) -> DeadLetter:
    event_id = event_type = None
    try:
        envelope = json.loads(row["payload"])
    except ValueError:
        envelope = None
    if isinstance(envelope, dict):
        event_id = _text(envelope.get("event_id"))
        event_type = _text(envelope.get("type"))
    return DeadLetter(
        id=row["id"], consumer=row["consumer"], topic=row["topic"], partition=row["partition"],
        offset=row["offset"], key=row["message_key"], event_id=event_id,
        event_type=event_type, failed_at=row["failed_at"],
        error=_last_line(row["error"])[:ERROR_SUMMARY_CHARACTERS])


def _text(value: Any) -> str | None:
    return value[:100] if isinstance(value, str) else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _not_found(letter_id: int) -> ProblemError:
    return ProblemError(404, "Not found", f"No dead letter {letter_id}.",
                        slug="dead-letter-not-found")


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime
