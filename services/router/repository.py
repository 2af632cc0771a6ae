"""router's queries of leads and assignments, and the routing lock.

The roster's queries are in `services.router.roster_repository`, the deliveries' and
hand-overs' in `services.router.delivery_repository`.

The statements every routed lead runs are built once, with bind parameters (or once per set of
columns, `functools.cache`): building one per call (and its cache key) costs SQLAlchemy more
than executing it on SQLite.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Update, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import (
    ACTIVE_STATUSES,
    assignment,
    escalation,
    handover,
    lead,
    notification,
    roster_state,
)
from shared.db import insert_ignoring_conflicts

ROUTING_LOCK_KEY = zlib.crc32(b"leadrelay.router.routing")
"""PostgreSQL advisory lock taken by every transaction that hands out leads."""


def _bumping(counter: Column[int]) -> Update:
    """Add one to a counter of the roster state row; returns both counters."""
    return (
        update(roster_state).where(roster_state.c.id == 1).values({counter: counter + 1})
        .returning(roster_state.c.generation, roster_state.c.routing_seq)
    )


_BUMP_ROUTING_SEQ = _bumping(roster_state.c.routing_seq)
_BUMP_GENERATION = _bumping(roster_state.c.generation)
_LEADS = (
    select(lead).where(lead.c.id.in_(bindparam("lead_ids", expanding=True))).order_by(lead.c.id)
)
_LEADS_FOR_UPDATE = _LEADS.with_for_update()
_INSERT_LEAD = insert(lead)
_INSERT_ASSIGNMENT = insert(assignment)


def affected_rows(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))


async def lock_routing(session: AsyncSession) -> tuple[int, int]:
    """Serialise routing decisions until the transaction ends; returns the roster generation
    and this transaction's routing sequence number (see `services.router.roster_cache`).

    Round robin reads the roster then moves one SDR to the back: two transactions doing it at
    once would pick the same SDR, and could deadlock on SDR rows taken in opposite orders. On
    SQLite every write transaction already holds the only write lock. The sequence number is
    bumped once per transaction, however often this is called in it.
    """
    sync_session = session.sync_session
    transaction = sync_session.get_transaction()
    found = sync_session.info.get(_LOCKED)
    if found is not None and found[0] is transaction:
        return found[1]  # type: ignore[no-any-return]
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(ROUTING_LOCK_KEY)))
    state = await _bump(session, _BUMP_ROUTING_SEQ)
    sync_session.info[_LOCKED] = (transaction, state)
    return state


_LOCKED = "router.routing_lock"
ROSTER_CHANGED = "router.roster_changed"
"""`session.info` flag: this transaction changed the roster (its cache must not keep it)."""


async def _bump(session: AsyncSession, statement: Update) -> tuple[int, int]:
    row = (await session.execute(statement)).first()
    if row is None:  # a database migrated before the row existed, or emptied by hand
        await session.execute(insert_ignoring_conflicts(
            roster_state, session.get_bind().dialect.name,
            [{"id": 1, "generation": 0, "routing_seq": 0}],
        ))
        row = (await session.execute(statement)).first()
        assert row is not None
    return int(row[0]), int(row[1])


async def routing_changed(session: AsyncSession) -> None:
    """Bump the routing sequence: the next decision re-reads who may take leads."""
    await _bump(session, _BUMP_ROUTING_SEQ)


async def roster_changed(session: AsyncSession) -> None:
    """Bump the roster generation: every router instance reloads its cached roster. Called by
    each function below that writes people, teams, memberships or rules, in the same
    transaction as the change."""
    session.sync_session.info[ROSTER_CHANGED] = True
    await _bump(session, _BUMP_GENERATION)


# Leads


async def find_lead(
    session: AsyncSession, lead_id: str, *, for_update: bool = False
) -> RowMapping | None:
    query = select(lead).where(lead.c.id == lead_id)
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return result.mappings().first()


async def find_leads(
    session: AsyncSession, lead_ids: Sequence[str], *, for_update: bool = False
) -> dict[str, RowMapping]:
    if not lead_ids:
        return {}
    query = _LEADS_FOR_UPDATE if for_update else _LEADS
    result = await session.execute(query, {"lead_ids": sorted(lead_ids)})
    return {row["id"]: row for row in result.mappings()}


LEAD_SCORE_COLUMNS = ("profile", "score", "temperature", "scored_at", "updated_at", "source",
                      "status", "waiting_since", "received_at")
"""What routing a scored lead may change on its row."""
_UPDATE_SCORED_LEADS = update(lead).where(lead.c.id == bindparam("b_id")).values({
    name: bindparam(f"b_{name}", type_=lead.c[name].type) for name in LEAD_SCORE_COLUMNS
})


async def insert_leads(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(_INSERT_LEAD, list(rows))


async def update_scored_leads(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write `LEAD_SCORE_COLUMNS` of each row (with its `id`) in one statement."""
    if not rows:
        return
    await session.execute(_UPDATE_SCORED_LEADS, [
        {"b_id": row["id"], **{f"b_{name}": row[name] for name in LEAD_SCORE_COLUMNS}}
        for row in rows
    ])


async def insert_lead(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(lead).values(**values))


async def update_lead(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(update(lead).where(lead.c.id == lead_id).values(**values))


async def any_waiting(session: AsyncSession) -> bool:
    found = await session.scalar(select(lead.c.id).where(lead.c.status == "waiting").limit(1))
    return found is not None


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


async def latest_assignment(session: AsyncSession, lead_id: str) -> RowMapping | None:
    """The lead's most recent assignment (the latest offer, claim or hand-over)."""
    result = await session.execute(
        select(assignment).where(assignment.c.lead_id == lead_id)
        .order_by(assignment.c.offered_at.desc(), assignment.c.attempt.desc()).limit(1)
    )
    return result.mappings().first()


async def list_assignments(
    session: AsyncSession,
    *,
    lead_id: str | None,
    limit: int,
    person_ids: Sequence[str] | None = None,
    team_ids: Sequence[str] | None = None,
) -> Sequence[RowMapping]:
    """Newest first; `person_ids`/`team_ids` restrict to what a rep or a manager may see."""
    query = select(assignment)
    if lead_id is not None:
        query = query.where(assignment.c.lead_id == lead_id)
    if person_ids is not None or team_ids is not None:
        query = query.where(or_(
            assignment.c.sdr_id.in_(list(person_ids or ())),
            assignment.c.team_id.in_(list(team_ids or ())),
        ))
    result = await session.execute(
        query.order_by(assignment.c.offered_at.desc(), assignment.c.attempt.desc()).limit(limit)
    )
    return result.mappings().all()


async def leads_with_active_assignment(
    session: AsyncSession, lead_ids: Sequence[str]
) -> set[str]:
    if not lead_ids:
        return set()
    result = await session.scalars(
        select(assignment.c.lead_id).where(
            assignment.c.lead_id.in_(list(lead_ids)), assignment.c.status.in_(ACTIVE_STATUSES)
        )
    )
    return set(result)


async def last_attempts(session: AsyncSession, lead_ids: Sequence[str]) -> dict[str, int]:
    if not lead_ids:
        return {}
    result = await session.execute(
        select(assignment.c.lead_id, func.max(assignment.c.attempt))
        .where(assignment.c.lead_id.in_(list(lead_ids))).group_by(assignment.c.lead_id)
    )
    return {row[0]: int(row[1] or 0) for row in result}


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
    await session.execute(_INSERT_ASSIGNMENT, dict(values))


async def insert_assignments(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Several offers in one statement; the partial unique index still refuses a second
    active assignment for a lead."""
    if rows:
        await session.execute(_INSERT_ASSIGNMENT, list(rows))


async def accept_offer(session: AsyncSession, assignment_id: str, at: datetime) -> bool:
    """Move an offer to `accepted`; False when it is no longer `offered` (or does not exist)."""
    result = await session.execute(
        update(assignment)
        .where(assignment.c.id == assignment_id, assignment.c.status == "offered")
        .values(status="accepted", accepted_at=at)
    )
    return affected_rows(result) == 1


async def transition(
    session: AsyncSession,
    assignment_id: str,
    *,
    from_status: str,
    values: Mapping[str, Any],
) -> bool:
    """Move an assignment on only if it is still in `from_status` (one conditional update)."""
    result = await session.execute(
        update(assignment)
        .where(assignment.c.id == assignment_id, assignment.c.status == from_status)
        .values(**values)
    )
    return affected_rows(result) == 1


async def claim_due_reminders(
    session: AsyncSession, now: datetime, limit: int
) -> Sequence[RowMapping]:
    result = await session.execute(
        select(assignment)
        .where(assignment.c.status == "offered", assignment.c.reminder_at <= now)
        .order_by(assignment.c.reminder_at, assignment.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = result.mappings().all()
    if rows:
        await session.execute(
            update(assignment).where(assignment.c.id.in_([row["id"] for row in rows]))
            .values(reminder_at=None)
        )
    return rows


async def claim_contact_breaches(
    session: AsyncSession, now: datetime, limit: int
) -> Sequence[RowMapping]:
    """Accepted assignments past their first-contact deadline, not yet reported."""
    result = await session.execute(
        select(assignment)
        .where(
            assignment.c.status == "accepted",
            assignment.c.contact_deadline_at <= now,
            assignment.c.contact_breached_at.is_(None),
        )
        .order_by(assignment.c.contact_deadline_at, assignment.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = result.mappings().all()
    if rows:
        await session.execute(
            update(assignment).where(assignment.c.id.in_([row["id"] for row in rows]))
            .values(contact_breached_at=now)
        )
    return rows


async def reoffer_count(session: AsyncSession, lead_id: str, role: str) -> int:
    found = await session.scalar(
        select(func.count()).select_from(assignment).where(
            assignment.c.lead_id == lead_id, assignment.c.role == role,
            assignment.c.status == "escalated",
        )
    )
    return int(found or 0)


async def queued_leads(session: AsyncSession, team_ids: Sequence[str]) -> Sequence[RowMapping]:
    result = await session.execute(
        select(lead.c.id, lead.c.queue_team_id, lead.c.queued_at, lead.c.score,
               lead.c.temperature)
        .where(lead.c.status == "queued", lead.c.queue_team_id.in_(list(team_ids)))
        .order_by(lead.c.queued_at, lead.c.id)
    )
    return result.mappings().all()


async def take_from_queue(session: AsyncSession, lead_id: str, at: datetime) -> bool:
    """Take a lead out of its team's shared queue; False when someone else got it first."""
    result = await session.execute(
        update(lead).where(lead.c.id == lead_id, lead.c.status == "queued")
        .values(status="routed", queue_team_id=None, queued_at=None, updated_at=at)
    )
    return affected_rows(result) == 1


async def erase_lead(session: AsyncSession, lead_id: str, at: datetime) -> None:
    """Remove a lead's personal data (profile, assignment snapshots, notes, queued messages)
    and take it out of routing for good: its open assignment is closed as `erased` (no timer
    looks at it again, no reject or escalation re-offers it), its waiting hand-over too, and
    the lead itself is `erased`, a status nothing routes from."""
    await session.execute(update(lead).where(lead.c.id == lead_id).values(
        profile={}, status="erased", waiting_since=None, queue_team_id=None, queued_at=None,
        updated_at=at))
    await session.execute(
        update(assignment).where(assignment.c.lead_id == lead_id)
        .values(lead_snapshot={}, note=None, bant=None)
    )
    await session.execute(
        update(assignment)
        .where(assignment.c.lead_id == lead_id, assignment.c.status.in_(ACTIVE_STATUSES))
        .values(status="erased", closed_at=at, reminder_at=None, contact_deadline_at=None)
    )
    await session.execute(
        update(handover).where(handover.c.lead_id == lead_id, handover.c.status == "waiting")
        .values(status="erased", next_attempt_at=None)
    )
    ids = select(assignment.c.id).where(assignment.c.lead_id == lead_id).scalar_subquery()
    await session.execute(
        update(notification).where(notification.c.assignment_id.in_(ids))
        .values(payload={}, status="cancelled", next_attempt_at=None)
    )
    nurtures = notification.c.payload[("data", "lead_id")].as_string() == lead_id
    await session.execute(
        update(notification).where(notification.c.kind == "nurture", nurtures,
                                   notification.c.status == "pending")
        .values(status="cancelled", next_attempt_at=None)
    )
    await session.execute(
        update(notification).where(notification.c.kind == "nurture", nurtures)
        .values(payload={})
    )


async def assignments_between(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[RowMapping]:
    """Assignments offered in [since, until), for the reports."""
    result = await session.execute(
        select(assignment).where(assignment.c.offered_at >= since, assignment.c.offered_at < until)
    )
    return result.mappings().all()


async def escalate_offer(session: AsyncSession, assignment_id: str, at: datetime) -> bool:
    """Close an offer as `escalated`; False when it is no longer `offered`."""
    result = await session.execute(
        update(assignment)
        .where(assignment.c.id == assignment_id, assignment.c.status == "offered")
        .values(status="escalated", closed_at=at)
    )
    return affected_rows(result) == 1


_EARLIEST_TIMER = select(
    select(func.min(assignment.c.deadline_at))
    .where(assignment.c.status == "offered").scalar_subquery(),
    select(func.min(assignment.c.reminder_at))
    .where(assignment.c.status == "offered").scalar_subquery(),
    select(func.min(assignment.c.contact_deadline_at))
    .where(assignment.c.status == "accepted", assignment.c.contact_breached_at.is_(None))
    .scalar_subquery(),
    select(func.min(handover.c.next_attempt_at))
    .where(handover.c.status == "waiting").scalar_subquery(),
    select(lead.c.id).where(lead.c.status == "waiting").limit(1).scalar_subquery(),
)


async def earliest_timer(session: AsyncSession) -> tuple[datetime | None, bool]:
    """What the timer loop has pending, in one statement (each term reads a partial index):
    the earliest offer deadline, reminder, first-contact deadline and hand-over retry (None:
    none), and whether a lead is waiting for a rep (tried on every tick)."""
    row = (await session.execute(_EARLIEST_TIMER)).one()
    times = [moment for moment in row[:4] if moment is not None]
    return (min(times) if times else None), row[4] is not None


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


async def escalations_between(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[RowMapping]:
    result = await session.execute(
        select(escalation).where(escalation.c.escalated_at >= since,
                                 escalation.c.escalated_at < until)
    )
    return result.mappings().all()


async def insert_escalation(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(escalation).values(**values))
