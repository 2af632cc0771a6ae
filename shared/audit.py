"""The audit log: who changed what a service is configured with, when, and what changed.

Each service has one table (`<service>_audit`, `audit_table`). `record` writes an entry in the
caller's session, so it commits or rolls back with the change it describes. The entry holds
the caller (`shared.auth.current_caller`: `admin:<fingerprint>` or `person:<id>`), the action
(`rules.replaced`, `source.saved`...), its subject, and the changed fields, each with its
value before and after; a field whose name says secret, token or password is kept as
`"[redacted]"`, so the log says that a secret changed, never what it is.
`audit_routes` serves the log, newest first, a page at a time: `GET /v1/audit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Index, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import current_caller
from shared.db import JSONType, UTCDateTime
from shared.outbox import AutoIncrement
from shared.runtime import ServiceRuntime

REDACTED = "[redacted]"
SECRET_WORDS = ("secret", "token", "password")
PAGE_SIZE = 50


def audit_table(metadata: MetaData, service: str) -> Table:
    return Table(
        f"{service}_audit",
        metadata,
        Column("id", AutoIncrement, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        Column("actor", String(200), nullable=False),
        Column("action", String(100), nullable=False),
        Column("subject", String(300), nullable=False),
        Column("changes", JSONType, nullable=False),
        Index(f"ix_{service}_audit_subject", "subject"),
    )


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{field: {"before": ..., "after": ...}}` for every field whose value differs (a creation
    has no `before`, a deletion no `after`), secrets redacted."""
    old, new = dict(before or {}), dict(after or {})
    changed: dict[str, Any] = {}
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) == new.get(name):
            continue
        entry = {}
        if before is not None:
            entry["before"] = _redacted(name, old.get(name))
        if after is not None:
            entry["after"] = _redacted(name, new.get(name))
        changed[name] = entry
    return changed


def _redacted(name: str, value: Any) -> Any:
    if value is not None and any(word in name.lower() for word in SECRET_WORDS):
        return REDACTED
    if isinstance(value, Mapping):
        return {key: _redacted(str(key), item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(name if not isinstance(item, Mapping) else "", item)
                for item in value]
    return value


async def record(
    session: AsyncSession, table: Table, *, at: datetime, action: str, subject: str,
    before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
) -> None:
    """Log a change in the session that makes it; nothing when nothing changed."""
    changed = changes(before, after)
    if not changed and before is not None and after is not None:
        return
    await session.execute(insert(table).values(
        at=at, actor=current_caller(), action=action, subject=subject,
        changes=_plain(changed),
    ))


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601 text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="`admin:<fingerprint of the token>` or `person:<id>`")
    action: str
    subject: str
    changes: dict[str, Any] = Field(description="Each changed field: before and after")


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=PAGE_SIZE, ge=1, le=500)
    before: int | None = Field(default=None, ge=1, le=2**63 - 1,
                               description="Entries older than this id")
    subject: str | None = Field(default=None, max_length=300,
                                description="Only this subject's (`source:crm`, `person:<id>`)")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(
        description="Pass it as `before` for the next (older) page; null on the last page"
    )


def audit_routes(
    table: Table, guard: Depends, route_class: type[APIRoute] = APIRoute
) -> APIRouter:
    """`GET /v1/audit`: the log, newest first, behind `guard` (the service's admin check),
    built with the service's `route_class` (ingest's documents its error answers)."""
    routes = APIRouter(prefix="/v1", tags=["audit"], dependencies=[guard],
                       route_class=route_class)

    @routes.get("/audit", response_model=AuditPage, summary="Who changed what, newest first")
    async def read_audit(request: Request, query: Annotated[AuditQuery, Query()]) -> AuditPage:
        runtime: ServiceRuntime = request.app.state.runtime
        async with runtime.db.reading() as session:
            rows = await _page(session, table, query.limit + 1, query.before, query.subject)
        entries = [AuditEntry.model_validate(dict(row)) for row in rows[:query.limit]]
        more = len(rows) > query.limit
        return AuditPage(entries=entries, next_before=entries[-1].id if more else None)

    return routes


async def _page(session: AsyncSession, table: Table, limit: int, before: int | None,
                subject: str | None) -> Sequence[Any]:
    query = select(table).order_by(table.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(table.c.id < before)
    if subject is not None:
        query = query.where(table.c.subject == subject)
    return (await session.execute(query)).mappings().all()
