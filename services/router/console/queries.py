"""The console's reads: a rep's open offers, a team's board, today's SLA counts.

Read-only queries over router's tables, kept here so the console adds no code to the
repository module; every write goes through the service layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.models import ACTIVE_STATUSES, assignment, lead, membership, sdr, team


async def open_assignments_of(session: AsyncSession, person_id: str) -> list[dict[str, Any]]:
    """The person's offered, accepted and contacted assignments, soonest deadline first, each
    with the lead's score reasons (`why`) when the router has them."""
    result = await session.execute(
        select(assignment, lead.c.profile.label("lead_profile"))
        .join(lead, lead.c.id == assignment.c.lead_id)
        .where(assignment.c.sdr_id == person_id, assignment.c.status.in_(ACTIVE_STATUSES))
        .order_by(assignment.c.deadline_at, assignment.c.id)
    )
    return [dict(row) for row in result.mappings()]


async def teams(session: AsyncSession, team_ids: Sequence[str]) -> list[RowMapping]:
    result = await session.execute(
        select(team).where(team.c.id.in_(list(team_ids))).order_by(team.c.name))
    return list(result.mappings())


async def open_offers_of_teams(
    session: AsyncSession, team_ids: Sequence[str], breached_since: datetime
) -> list[dict[str, Any]]:
    """The teams' offers still waiting for an answer, and those that lapsed since
    `breached_since`, with the rep's name, by deadline."""
    result = await session.execute(
        select(assignment, sdr.c.name.label("rep_name"))
        .join(sdr, sdr.c.id == assignment.c.sdr_id)
        .where(assignment.c.team_id.in_(list(team_ids)),
               or_(assignment.c.status == "offered",
                   and_(assignment.c.status == "escalated",
                        assignment.c.closed_at >= breached_since)))
        .order_by(assignment.c.deadline_at, assignment.c.id)
    )
    return [dict(row) for row in result.mappings()]


async def queued_leads(session: AsyncSession, team_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Leads waiting in the teams' shared queues, oldest first, with their last snapshot."""
    result = await session.execute(
        select(lead.c.id, lead.c.queue_team_id, lead.c.queued_at, lead.c.score,
               lead.c.temperature, lead.c.profile)
        .where(lead.c.status == "queued", lead.c.queue_team_id.in_(list(team_ids)))
        .order_by(lead.c.queued_at, lead.c.id)
    )
    return [dict(row) for row in result.mappings()]


async def members(session: AsyncSession, team_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The teams' people (once each), with presence, capacity and open assignments."""
    result = await session.execute(
        select(sdr.c.id, sdr.c.name, sdr.c.role, sdr.c.presence, sdr.c.capacity,
               sdr.c.out_of_office, sdr.c.active)
        .where(sdr.c.id.in_(
            select(membership.c.person_id).where(membership.c.team_id.in_(list(team_ids)))))
        .order_by(sdr.c.name, sdr.c.id)
    )
    people = [dict(row) for row in result.mappings()]
    loads = await open_counts(session, [person["id"] for person in people])
    for person in people:
        person["load"] = loads.get(person["id"], 0)
    return people


async def open_counts(session: AsyncSession, person_ids: Sequence[str]) -> dict[str, int]:
    if not person_ids:
        return {}
    result = await session.execute(
        select(assignment.c.sdr_id, assignment.c.id)
        .where(assignment.c.sdr_id.in_(list(person_ids)),
               assignment.c.status.in_(ACTIVE_STATUSES)))
    counts: dict[str, int] = {}
    for person_id, _ in result:
        counts[person_id] = counts.get(person_id, 0) + 1
    return counts


async def team_assignments_since(
    session: AsyncSession, team_ids: Sequence[str], since: datetime
) -> list[dict[str, Any]]:
    """The teams' assignments offered since `since` (today's SLA counts)."""
    result = await session.execute(
        select(assignment).where(assignment.c.team_id.in_(list(team_ids)),
                                 assignment.c.offered_at >= since))
    return [dict(row) for row in result.mappings()]


async def claimant_name(session: AsyncSession, lead_id: str) -> str | None:
    """Who holds the lead now (its active assignment's person), for a claim that lost."""
    result = await session.execute(
        select(sdr.c.name).join(assignment, assignment.c.sdr_id == sdr.c.id)
        .where(assignment.c.lead_id == lead_id, assignment.c.status.in_(ACTIVE_STATUSES)))
    name: str | None = result.scalar()
    return name


async def person(session: AsyncSession, person_id: str) -> RowMapping | None:
    result = await session.execute(select(sdr).where(sdr.c.id == person_id))
    return result.mappings().first()
