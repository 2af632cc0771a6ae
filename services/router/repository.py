"""All of router's queries.

The statements every routed lead runs are built once, with bind parameters (or once per set of
columns, `functools.cache`): building one per call (and its cache key) costs SQLAlchemy more
than executing it on SQLite.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, Update, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import (
    ACTIVE_STATUSES,
    OPEN_STATUSES,
    account_owner,
    assignment,
    disabled_endpoint,
    escalation,
    handover,
    lead,
    membership,
    notification,
    notification_attempt,
    person_token,
    roster_state,
    rule_set,
    sdr,
    team,
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
_MARK_SDRS_ASSIGNED = update(sdr).where(sdr.c.id == bindparam("b_id")).values(
    last_assigned_at=bindparam("b_at", type_=sdr.c.last_assigned_at.type))
_LEADS = (
    select(lead).where(lead.c.id.in_(bindparam("lead_ids", expanding=True))).order_by(lead.c.id)
)
_LEADS_FOR_UPDATE = _LEADS.with_for_update()
_INSERT_LEAD = insert(lead)
_INSERT_ASSIGNMENT = insert(assignment)
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


def _rowcount(result: Any) -> int:
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


async def roster_changed(session: AsyncSession) -> None:
    """Bump the roster generation: every router instance reloads its cached roster. Called by
    each function below that writes people, teams, memberships or rules, in the same
    transaction as the change."""
    session.sync_session.info[ROSTER_CHANGED] = True
    await _bump(session, _BUMP_GENERATION)


# The roster


async def insert_sdr(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(sdr).values(**values))
    await roster_changed(session)


async def update_person(session: AsyncSession, person_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(update(sdr).where(sdr.c.id == person_id).values(**values))
    await roster_changed(session)


async def find_sdr(session: AsyncSession, sdr_id: str) -> RowMapping | None:
    result = await session.execute(select(sdr).where(sdr.c.id == sdr_id))
    return result.mappings().first()


async def find_sdr_by_email(session: AsyncSession, email: str) -> RowMapping | None:
    result = await session.execute(select(sdr).where(sdr.c.email == email))
    return result.mappings().first()


async def find_person_by_token(session: AsyncSession, token_hash: str) -> RowMapping | None:
    """The person holding this token, unless it was revoked."""
    result = await session.execute(
        select(sdr).join(person_token, person_token.c.person_id == sdr.c.id)
        .where(person_token.c.token_hash == token_hash, person_token.c.revoked_at.is_(None))
    )
    return result.mappings().first()


async def insert_person_token(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(person_token).values(**values))


async def list_person_tokens(session: AsyncSession, person_id: str) -> Sequence[RowMapping]:
    result = await session.execute(
        select(person_token).where(person_token.c.person_id == person_id)
        .order_by(person_token.c.created_at, person_token.c.id)
    )
    return result.mappings().all()


async def revoke_person_token(
    session: AsyncSession, person_id: str, token_id: str, at: datetime
) -> RowMapping | None:
    """Revoke one of the person's tokens (once: a second revocation keeps the first time)."""
    await session.execute(
        update(person_token)
        .where(person_token.c.id == token_id, person_token.c.person_id == person_id,
               person_token.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    result = await session.execute(
        select(person_token)
        .where(person_token.c.id == token_id, person_token.c.person_id == person_id)
    )
    return result.mappings().first()


async def list_sdrs(session: AsyncSession, *, role: str | None = None) -> Sequence[RowMapping]:
    query = select(sdr).order_by(sdr.c.created_at, sdr.c.id)
    if role is not None:
        query = query.where(sdr.c.role == role)
    result = await session.execute(query)
    return result.mappings().all()


async def people_in_pool(
    session: AsyncSession, *, team_id: str | None, role: str, with_open_counts: bool = True
) -> Sequence[RowMapping]:
    """People of `role` in a team (every one of the role when `team_id` is None), with their
    count of open assignments unless `with_open_counts` is False."""
    if not with_open_counts:
        plain = select(sdr).where(sdr.c.role == role)
        if team_id is not None:
            plain = plain.join(membership, membership.c.person_id == sdr.c.id).where(
                membership.c.team_id == team_id
            )
        found = await session.execute(plain.order_by(sdr.c.created_at, sdr.c.id))
        return found.mappings().all()
    open_count = (
        select(assignment.c.sdr_id, func.count().label("open_assignments"))
        .where(assignment.c.status.in_(OPEN_STATUSES))
        .group_by(assignment.c.sdr_id)
        .subquery()
    )
    query = (
        select(sdr, func.coalesce(open_count.c.open_assignments, 0).label("open_assignments"))
        .outerjoin(open_count, open_count.c.sdr_id == sdr.c.id)
        .where(sdr.c.role == role)
    )
    if team_id is not None:
        query = query.join(membership, membership.c.person_id == sdr.c.id).where(
            membership.c.team_id == team_id
        )
    result = await session.execute(query.order_by(sdr.c.created_at, sdr.c.id))
    return result.mappings().all()


async def open_assignment_counts(
    session: AsyncSession, person_ids: Sequence[str]
) -> dict[str, int]:
    """Open assignments (those counting against capacity) of each person."""
    if not person_ids:
        return {}
    result = await session.execute(
        select(assignment.c.sdr_id, func.count())
        .where(assignment.c.sdr_id.in_(list(person_ids)),
               assignment.c.status.in_(OPEN_STATUSES))
        .group_by(assignment.c.sdr_id)
    )
    return {row[0]: int(row[1]) for row in result}


async def assignment_marks(
    session: AsyncSession, person_ids: Sequence[str] | None
) -> list[tuple[str, datetime | None, datetime | None]]:
    """(id, last assigned at, paused until) of the people (of everyone with None)."""
    query = select(sdr.c.id, sdr.c.last_assigned_at, sdr.c.paused_until)
    if person_ids is not None:
        query = query.where(sdr.c.id.in_(list(person_ids)))
    return [(row[0], row[1], row[2]) for row in await session.execute(query)]


async def assignment_counts(
    session: AsyncSession, person_ids: Sequence[str], since: datetime
) -> dict[str, int]:
    """Leads each person was given since `since`, not counting offers they let lapse or
    turned down (those leads went to someone else)."""
    if not person_ids:
        return {}
    result = await session.execute(
        select(assignment.c.sdr_id, func.count())
        .where(
            assignment.c.sdr_id.in_(person_ids),
            assignment.c.offered_at >= since,
            assignment.c.status.not_in(("escalated", "rejected")),
        )
        .group_by(assignment.c.sdr_id)
    )
    return {row[0]: int(row[1]) for row in result}


async def mark_sdr_assigned(session: AsyncSession, sdr_id: str, at: datetime) -> None:
    """Round robin's mark. Call it under the routing lock and tell the transaction's routing
    state (`RoutingState.assigned`), as `service.offer_lead` does: the cache relies on it."""
    await session.execute(update(sdr).where(sdr.c.id == sdr_id).values(last_assigned_at=at))


async def mark_sdrs_assigned(session: AsyncSession, marks: Mapping[str, datetime]) -> None:
    """`last_assigned_at` of several people (person id -> when) in one statement."""
    if marks:
        await session.execute(
            _MARK_SDRS_ASSIGNED,
            [{"b_id": person_id, "b_at": at} for person_id, at in marks.items()],
        )


async def pause_person(session: AsyncSession, person_id: str, until: datetime) -> None:
    """Pause a rep; the extra sequence bump makes every instance re-read pauses before its
    next decision, whoever called this."""
    await session.execute(update(sdr).where(sdr.c.id == person_id).values(paused_until=until))
    await _bump(session, _BUMP_ROUTING_SEQ)


# Teams


async def insert_team(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(team).values(**values))
    await roster_changed(session)


async def update_team(session: AsyncSession, team_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(update(team).where(team.c.id == team_id).values(**values))
    await roster_changed(session)


async def find_team(session: AsyncSession, team_id: str) -> RowMapping | None:
    result = await session.execute(select(team).where(team.c.id == team_id))
    return result.mappings().first()


async def find_team_by_name(session: AsyncSession, name: str) -> RowMapping | None:
    result = await session.execute(select(team).where(team.c.name == name))
    return result.mappings().first()


async def list_teams(session: AsyncSession) -> Sequence[RowMapping]:
    result = await session.execute(select(team).order_by(team.c.name))
    return result.mappings().all()


async def team_members(session: AsyncSession, team_id: str) -> list[str]:
    result = await session.scalars(
        select(membership.c.person_id).where(membership.c.team_id == team_id)
        .order_by(membership.c.person_id)
    )
    return list(result)


async def teams_of(session: AsyncSession, person_id: str) -> list[str]:
    result = await session.scalars(
        select(membership.c.team_id).where(membership.c.person_id == person_id)
    )
    return list(result)


async def teams_managed_by(session: AsyncSession, person_id: str) -> list[str]:
    result = await session.scalars(select(team.c.id).where(team.c.manager_id == person_id))
    return list(result)


async def set_memberships(session: AsyncSession, person_id: str, team_ids: Sequence[str]) -> None:
    await roster_changed(session)
    await session.execute(delete(membership).where(membership.c.person_id == person_id))
    if team_ids:
        await session.execute(
            insert(membership),
            [{"team_id": team_id, "person_id": person_id} for team_id in team_ids],
        )


# Rules and account owners


async def current_rule_set(session: AsyncSession) -> RowMapping | None:
    result = await session.execute(select(rule_set).order_by(rule_set.c.version.desc()).limit(1))
    return result.mappings().first()


async def current_rule_set_head(session: AsyncSession) -> RowMapping | None:
    """The version in force and when it was stored, without the document."""
    result = await session.execute(
        select(rule_set.c.version, rule_set.c.created_at)
        .order_by(rule_set.c.version.desc()).limit(1)
    )
    return result.mappings().first()


async def insert_rule_set(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(rule_set).values(**values))
    await roster_changed(session)


async def find_account_owner(session: AsyncSession, account_key: str) -> str | None:
    found: str | None = await session.scalar(
        select(account_owner.c.person_id).where(account_owner.c.account_key == account_key)
    )
    return found


async def claim_account(
    session: AsyncSession, account_key: str, person_id: str, at: datetime
) -> None:
    """Make `person_id` the owner of the account unless it already has one."""
    if await find_account_owner(session, account_key) is None:
        await session.execute(
            insert(account_owner).values(account_key=account_key, person_id=person_id,
                                         assigned_at=at)
        )


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
    return _rowcount(result) == 1


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
    return _rowcount(result) == 1


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
    return _rowcount(result) == 1


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
