"""router's queries of the roster: people, their tokens, teams, rule sets, account owners.

Each write calls `repository.roster_changed` in its transaction, so every router instance
reloads its cached roster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import (
    OPEN_STATUSES,
    account_owner,
    assignment,
    membership,
    person_token,
    rule_set,
    sdr,
    team,
)
from services.router.repository import roster_changed, routing_changed

_MARK_SDRS_ASSIGNED = update(sdr).where(sdr.c.id == bindparam("b_id")).values(
    last_assigned_at=bindparam("b_at", type_=sdr.c.last_assigned_at.type))


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
    state (`RoutingState.assigned`), as `offers.offer_lead` does: the cache relies on it."""
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
    await routing_changed(session)


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
