"""All of ingest's queries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import lead, submission


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
