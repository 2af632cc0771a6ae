"""router's queries of deliveries (notifications, their attempts, disabled endpoints) and of
hand-overs waiting for an AE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Update, bindparam, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import (
    assignment,
    disabled_endpoint,
    handover,
    notification,
    notification_attempt,
    sdr,
)
from shared.db import insert_ignoring_conflicts

_INSERT_NOTIFICATION = insert(notification)
_INSERT_CLAIMED_NOTIFICATION = insert(notification).returning(
    notification.c.message_id, notification.c.id)
_INSERT_ATTEMPT = insert(notification_attempt)
_MARK_NOTIFIED = (
    update(assignment)
    .where(assignment.c.id == bindparam("b_id"), assignment.c.notified_at.is_(None))
    .values(notified_at=bindparam("b_at", type_=assignment.c.notified_at.type))
)
_DISABLED_AMONG = select(disabled_endpoint.c.url).where(
    disabled_endpoint.c.url.in_(bindparam("urls", expanding=True)))


# Notifications


async def insert_notifications(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(_INSERT_NOTIFICATION, list(rows))


async def insert_claimed_notifications(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Insert `rows` (already leased, each with its own `message_id`) and return them as
    `claim_due_notifications` does: every column, the id included."""
    if not rows:
        return []
    # Matched by message id: SQLite cannot return ids in the rows' order without inserting
    # them one statement each.
    inserted = await session.execute(_INSERT_CLAIMED_NOTIFICATION, list(rows))
    ids: dict[str, int] = {message_id: notification_id for message_id, notification_id in inserted}
    blank = dict.fromkeys(notification.c.keys())
    return [{**blank, **row, "id": ids[row["message_id"]]} for row in rows]


async def claim_due_notifications(
    session: AsyncSession, now: datetime, limit: int, *, lease_until: datetime
) -> list[dict[str, Any]]:
    """Take up to `limit` due deliveries and lease them until `lease_until`, each with its
    person's encrypted channel secrets (`services.router.channels`).

    The lease, not a held lock, keeps other loops off a row while its webhook call runs
    outside any transaction; if this process dies mid-call, the row is due again once the
    lease ends. The attempt is counted at claim time, so such crashes count too.
    """
    result = await session.execute(
        select(notification, sdr.c.webhook_secret.label("sdr_webhook_secret"),
               sdr.c.slack_webhook_url.label("sdr_slack_webhook_url"))
        .select_from(notification.outerjoin(sdr, sdr.c.id == notification.c.sdr_id))
        .where(notification.c.status == "pending", notification.c.next_attempt_at <= now)
        .order_by(notification.c.next_attempt_at, notification.c.id)
        .limit(limit)
        .with_for_update(of=notification, skip_locked=True)
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


async def record_attempts(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(_INSERT_ATTEMPT, list(rows))


async def finish_attempts(
    session: AsyncSession, outcomes: Sequence[tuple[int, Mapping[str, Any]]]
) -> None:
    """Record the outcome of several delivery attempts: one statement per set of changed columns."""
    groups: dict[tuple[str, ...], list[tuple[int, Mapping[str, Any]]]] = {}
    for notification_id, values in outcomes:
        groups.setdefault(tuple(sorted(values)), []).append((notification_id, values))
    for names, items in groups.items():
        await session.execute(_finish_attempts(names), [
            {"b_id": notification_id, **{f"b_{name}": values[name] for name in names}}
            for notification_id, values in items
        ])


@cache
def _finish_attempts(names: tuple[str, ...]) -> Update:
    return update(notification).where(
        notification.c.id == bindparam("b_id"), notification.c.status == "pending"
    ).values({name: bindparam(f"b_{name}", type_=notification.c[name].type) for name in names})


async def mark_all_notified(session: AsyncSession, moments: Mapping[str, datetime]) -> None:
    """Mark several assignments notified (id -> when) in one statement."""
    if moments:
        await session.execute(
            _MARK_NOTIFIED,
            [{"b_id": assignment_id, "b_at": at} for assignment_id, at in moments.items()],
        )


async def disabled_among(session: AsyncSession, urls: set[str]) -> set[str]:
    """Those of `urls` that answered `410 Gone` before."""
    if not urls:
        return set()
    found = await session.scalars(_DISABLED_AMONG, {"urls": sorted(urls)})
    return set(found)


async def cancel_pending_notifications(session: AsyncSession, assignment_id: str) -> None:
    await session.execute(
        update(notification)
        .where(notification.c.assignment_id == assignment_id, notification.c.status == "pending")
        .values(status="cancelled", next_attempt_at=None)
    )


async def offer_traceparents(
    session: AsyncSession, assignment_ids: Sequence[str]
) -> dict[str, str]:
    """The traceparent each assignment's offer was notified in (the lead's trace), by id."""
    if not assignment_ids:
        return {}
    rows = await session.execute(
        select(notification.c.assignment_id, notification.c.traceparent).where(
            notification.c.assignment_id.in_(assignment_ids),
            notification.c.kind == "offer",
            notification.c.traceparent.is_not(None),
        ))
    return {assignment_id: traceparent for assignment_id, traceparent in rows}


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


async def disable_endpoint(session: AsyncSession, url: str, at: datetime, reason: str) -> None:
    if await is_disabled(session, url):
        return
    # Another instance may disable the same URL at the same moment: its row is as good as ours.
    await session.execute(insert_ignoring_conflicts(
        disabled_endpoint, session.get_bind().dialect.name,
        {"url": url, "disabled_at": at, "reason": reason}, index_elements=["url"],
    ))
    # Rows locked by another transaction are skipped, not waited for: waiting could deadlock
    # with an instance disabling the same URL. Their holder reads the endpoint disabled before
    # it sends them again (`Notifier.claim`, `Notifier.deliver`).
    pending = (
        select(notification.c.id)
        .where(notification.c.url == url, notification.c.status == "pending")
        .with_for_update(skip_locked=True)
    )
    await session.execute(
        update(notification).where(notification.c.id.in_(pending.scalar_subquery()))
        .values(status="cancelled", next_attempt_at=None)
    )


async def is_disabled(session: AsyncSession, url: str) -> bool:
    found = await session.scalar(
        select(disabled_endpoint.c.url).where(disabled_endpoint.c.url == url)
    )
    return found is not None


async def find_attempts(
    session: AsyncSession, notification_ids: Sequence[int]
) -> Sequence[RowMapping]:
    if not notification_ids:
        return []
    result = await session.execute(
        select(notification_attempt)
        .where(notification_attempt.c.notification_id.in_(list(notification_ids)))
        .order_by(notification_attempt.c.id)
    )
    return result.mappings().all()


# Hand-overs waiting for an AE


async def insert_handover(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(handover).values(**values))


async def update_handover(
    session: AsyncSession, handover_id: str, values: Mapping[str, Any]
) -> None:
    await session.execute(update(handover).where(handover.c.id == handover_id).values(**values))


async def claim_due_handovers(
    session: AsyncSession, now: datetime, limit: int
) -> Sequence[RowMapping]:
    """Waiting hand-overs due for another try, oldest first; rows locked by others skipped."""
    result = await session.execute(
        select(handover)
        .where(handover.c.status == "waiting", handover.c.next_attempt_at <= now)
        .order_by(handover.c.next_attempt_at, handover.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.mappings().all()


async def list_handovers(
    session: AsyncSession, *, status: str | None = None, lead_id: str | None = None
) -> Sequence[RowMapping]:
    query = select(handover).order_by(handover.c.requested_at, handover.c.id)
    if status is not None:
        query = query.where(handover.c.status == status)
    if lead_id is not None:
        query = query.where(handover.c.lead_id == lead_id)
    result = await session.execute(query)
    return result.mappings().all()
