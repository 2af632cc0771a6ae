"""All of scorer's queries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer.models import lead_score


async def find_score(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(select(lead_score).where(lead_score.c.lead_id == lead_id))
    return result.mappings().first()


async def find_score_for_update(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(
        select(lead_score).where(lead_score.c.lead_id == lead_id).with_for_update()
    )
    return result.mappings().first()


async def insert_score(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(lead_score).values(**values))


async def update_score(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(lead_score).where(lead_score.c.lead_id == lead_id).values(**values)
    )
