"""All of router's queries."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import (
    ACTIVE_STATUSES,
    assignment,
    escalation,
    lead,
    notification,
    notification_attempt,
    sdr,
)
from services.router.routing import SdrCandidate

ROUTING_LOCK_KEY = zlib.crc32(b"leadrelay.router.routing")
"""PostgreSQL advisory lock taken by every transaction that hands out leads."""


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))


async def lock_routing(session: AsyncSession) -> None:
    """Serialise routing decisions until the transaction ends.

    Round robin reads the roster then moves one SDR to the back: two transactions doing it at
    once would pick the same SDR, and could deadlock on SDR rows taken in opposite orders. On
    SQLite every write transaction already holds the only write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(ROUTING_LOCK_KEY)))


# The roster


async def insert_sdr(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(sdr).values(**values))


async def find_sdr(session: AsyncSession, sdr_id: str) -> RowMapping | None:
    result = await session.execute(select(sdr).where(sdr.c.id == sdr_id))
    return result.mappings().first()


async def find_sdr_by_email(session: AsyncSession, email: str) -> RowMapping | None:
    result = await session.execute(select(sdr).where(sdr.c.email == email))
    return result.mappings().first()


async def list_sdrs(session: AsyncSession) -> Sequence[RowMapping]:
    result = await session.execute(select(sdr).order_by(sdr.c.created_at, sdr.c.id))
    return result.mappings().all()


async def active_sdrs(session: AsyncSession) -> list[SdrCandidate]:
    result = await session.execute(
        select(sdr.c.id, sdr.c.active, sdr.c.last_assigned_at, sdr.c.created_at).where(
            sdr.c.active.is_(True)
        )
    )
    return [SdrCandidate(**row) for row in result.mappings()]


async def mark_sdr_assigned(session: AsyncSession, sdr_id: str, at: datetime) -> None:
    await session.execute(update(sdr).where(sdr.c.id == sdr_id).values(last_assigned_at=at))


# Leads


async def find_lead(
    session: AsyncSession, lead_id: str, *, for_update: bool = False
) -> RowMapping | None:
    query = select(lead).where(lead.c.id == lead_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.mappings().first()


async def insert_lead(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(lead).values(**values))


async def update_lead(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(update(lead).where(lead.c.id == lead_id).values(**values))


async def claim_waiting_leads(session: AsyncSession, limit: int) -> Sequence[RowMapping]:
    result = await session.execute(
        select(lead)
        .where(lead.c.status == "waiting")
        .order_by(lead.c.waiting_since, lead.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.mappings().all()


# Assignments


async def find_assignment(session: AsyncSession, assignment_id: str) -> RowMapping | None:
    result = await session.execute(select(assignment).where(assignment.c.id == assignment_id))
    return result.mappings().first()


async def active_assignment(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(
        select(assignment).where(
            assignment.c.lead_id == lead_id, assignment.c.status.in_(ACTIVE_STATUSES)
        )
    )
    return result.mappings().first()


async def list_assignments(
    session: AsyncSession, *, lead_id: str | None, limit: int
) -> Sequence[RowMapping]:
    query = select(assignment)
    if lead_id is not None:
        query = query.where(assignment.c.lead_id == lead_id)
    result = await session.execute(
        query.order_by(assignment.c.offered_at.desc(), assignment.c.attempt.desc()).limit(limit)
    )
    return result.mappings().all()


async def last_attempt(session: AsyncSession, lead_id: str) -> int:
    found = await session.scalar(
        select(func.max(assignment.c.attempt)).where(assignment.c.lead_id == lead_id)
    )
    return int(found or 0)


async def sdrs_who_had(session: AsyncSession, lead_id: str) -> set[str]:
    result = await session.scalars(
        select(assignment.c.sdr_id).where(assignment.c.lead_id == lead_id).distinct()
    )
    return set(result)


async def insert_assignment(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(assignment).values(**values))


async def accept_offer(session: AsyncSession, assignment_id: str, at: datetime) -> bool:
    """Move an offer to `accepted`; False when it is no longer `offered` (or does not exist)."""
    result = await session.execute(
        update(assignment)
        .where(assignment.c.id == assignment_id, assignment.c.status == "offered")
        .values(status="accepted", accepted_at=at)
    )
    return _rowcount(result) == 1


async def escalate_offer(session: AsyncSession, assignment_id: str, at: datetime) -> bool:
    """Close an offer as `escalated`; False when it is no longer `offered`."""
    result = await session.execute(
        update(assignment)
        .where(assignment.c.id == assignment_id, assignment.c.status == "offered")
        .values(status="escalated", closed_at=at)
    )
    return _rowcount(result) == 1


async def claim_lapsed_offers(
    session: AsyncSession, now: datetime, limit: int
) -> Sequence[RowMapping]:
    """Offers past their deadline, oldest deadline first; rows locked by others are skipped."""
    result = await session.execute(
        select(assignment)
        .where(assignment.c.status == "offered", assignment.c.deadline_at <= now)
        .order_by(assignment.c.deadline_at, assignment.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.mappings().all()


async def insert_escalation(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(escalation).values(**values))


# Notifications


async def insert_notification(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(notification).values(**values))


async def claim_due_notifications(
    session: AsyncSession, now: datetime, limit: int, *, lease_until: datetime
) -> list[dict[str, Any]]:
    """Take up to `limit` due deliveries and lease them until `lease_until`.

    The lease, not a held lock, keeps other loops off a row while its webhook call runs
    outside any transaction; if this process dies mid-call, the row is due again once the
    lease ends. The attempt is counted at claim time, so such crashes count too.
    """
    result = await session.execute(
        select(notification)
        .where(notification.c.status == "pending", notification.c.next_attempt_at <= now)
        .order_by(notification.c.next_attempt_at, notification.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = [dict(row) for row in result.mappings()]
    if rows:
        await session.execute(
            update(notification)
            .where(notification.c.id.in_([row["id"] for row in rows]))
            .values(attempts=notification.c.attempts + 1, next_attempt_at=lease_until)
        )
    for row in rows:
        row["attempts"] += 1
    return rows


async def finish_attempt(
    session: AsyncSession, notification_id: int, values: Mapping[str, Any]
) -> bool:
    """Store an attempt's outcome on a still-pending delivery; False if it was cancelled."""
    result = await session.execute(
        update(notification)
        .where(notification.c.id == notification_id, notification.c.status == "pending")
        .values(**values)
    )
    return _rowcount(result) == 1


async def record_attempt(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(notification_attempt).values(**values))


async def cancel_pending_notifications(session: AsyncSession, assignment_id: str) -> None:
    await session.execute(
        update(notification)
        .where(notification.c.assignment_id == assignment_id, notification.c.status == "pending")
        .values(status="cancelled", next_attempt_at=None)
    )


async def next_notification_due(session: AsyncSession) -> datetime | None:
    found: datetime | None = await session.scalar(
        select(func.min(notification.c.next_attempt_at)).where(
            notification.c.status == "pending"
        )
    )
    return found


async def find_notifications(session: AsyncSession, assignment_id: str) -> Sequence[RowMapping]:
    result = await session.execute(
        select(notification)
        .where(notification.c.assignment_id == assignment_id)
        .order_by(notification.c.id)
    )
    return result.mappings().all()
