"""All of ingest's queries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import CursorResult, Result, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import idempotency_key, lead, source, submission


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


async def find_lead(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(select(lead).where(lead.c.id == lead_id))
    return result.mappings().first()


async def find_lead_by_email_for_update(session: AsyncSession, email: str) -> RowMapping | None:
    result = await session.execute(select(lead).where(lead.c.email == email).with_for_update())
    return result.mappings().first()


async def insert_lead(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(lead).values(**values))


async def update_lead(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(update(lead).where(lead.c.id == lead_id).values(**values))


async def record_submission(
    session: AsyncSession,
    *,
    lead_id: str | None,
    channel: str,
    source_key: str | None,
    external_id: str | None,
    payload: Mapping[str, Any],
    raw: str | None,
    received_at: datetime,
) -> None:
    await session.execute(
        insert(submission).values(
            lead_id=lead_id, channel=channel, source_key=source_key, external_id=external_id,
            payload=dict(payload), raw=raw, received_at=received_at,
        )
    )


async def submission_exists(session: AsyncSession, source_key: str, external_id: str) -> bool:
    found = await session.scalar(
        select(submission.c.id).where(
            submission.c.source_key == source_key, submission.c.external_id == external_id
        ).limit(1)
    )
    return found is not None


async def purge_submissions(session: AsyncSession, received_before: datetime) -> int:
    result = await session.execute(
        delete(submission).where(submission.c.received_at < received_before)
    )
    return _rowcount(result)


async def find_source(session: AsyncSession, key: str) -> RowMapping | None:
    result = await session.execute(select(source).where(source.c.key == key))
    return result.mappings().first()


async def list_sources(session: AsyncSession) -> list[RowMapping]:
    result = await session.execute(select(source).order_by(source.c.key))
    return list(result.mappings().all())


async def save_source(
    session: AsyncSession, key: str, kind: str, config: Mapping[str, Any], now: datetime
) -> bool:
    """Insert or replace a source; True when it is new."""
    updated = await session.execute(
        update(source).where(source.c.key == key).values(kind=kind, config=dict(config),
                                                          updated_at=now)
    )
    if _rowcount(updated):
        return False
    await session.execute(
        insert(source).values(key=key, kind=kind, config=dict(config), created_at=now,
                              updated_at=now)
    )
    return True


async def delete_source(session: AsyncSession, key: str) -> bool:
    result = await session.execute(delete(source).where(source.c.key == key))
    return _rowcount(result) > 0


async def find_idempotent_response(
    session: AsyncSession, scope: str, key: str
) -> RowMapping | None:
    result = await session.execute(
        select(idempotency_key).where(idempotency_key.c.scope == scope,
                                      idempotency_key.c.key == key)
    )
    return result.mappings().first()


async def save_idempotent_response(
    session: AsyncSession, *, scope: str, key: str, request_hash: str, status_code: int,
    response: Any, now: datetime,
) -> None:
    await session.execute(
        insert(idempotency_key).values(
            scope=scope, key=key, request_hash=request_hash, status_code=status_code,
            response=response, created_at=now,
        )
    )


async def purge_idempotency_keys(session: AsyncSession, created_before: datetime) -> int:
    result = await session.execute(
        delete(idempotency_key).where(idempotency_key.c.created_at < created_before)
    )
    return _rowcount(result)


async def erase_lead(session: AsyncSession, lead_id: str, outbox_events: Table) -> None:
    await session.execute(delete(submission).where(submission.c.lead_id == lead_id))
    await session.execute(
        delete(outbox_events).where(
            outbox_events.c.message_key == lead_id, outbox_events.c.published_at.is_not(None)
        )
    )
    await session.execute(delete(lead).where(lead.c.id == lead_id))
