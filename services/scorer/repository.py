"""All of scorer's queries.

The statements every scored lead runs are built once, with bind parameters: building one per
call (and its cache key) costs SQLAlchemy more than executing it on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer.models import (
    channel_cost,
    lead_score,
    rejection,
    rejection_rule,
    scoring_model,
    signal,
    stage_change,
)
from shared.db import insert_ignoring_conflicts

_SCORE = select(lead_score).where(lead_score.c.lead_id == bindparam("lead_id"))
_SCORE_FOR_UPDATE = _SCORE.with_for_update()
_SCORES_FOR_UPDATE = (
    select(lead_score)
    .where(lead_score.c.lead_id.in_(bindparam("lead_ids", expanding=True)))
    .order_by(lead_score.c.lead_id)
    .with_for_update()
)
_INSERT_SCORE = insert(lead_score)
_UPDATE_SCORE = update(lead_score).where(lead_score.c.lead_id == bindparam("key"))
_SCORE_COLUMNS = [column.name for column in lead_score.columns if column.name != "lead_id"]
_UPDATE_WHOLE_SCORES = _UPDATE_SCORE.values(
    {name: bindparam(f"new_{name}") for name in _SCORE_COLUMNS})
_SCORING_COLUMNS = [
    name for name in _SCORE_COLUMNS if name not in ("profile", "received_at", "erased_at")
]
_UPDATE_SCORING = _UPDATE_SCORE.values(
    {name: bindparam(f"new_{name}") for name in _SCORING_COLUMNS})
_SIGNALS_OF_LEADS = select(
    signal.c.lead_id, signal.c.signal_id, signal.c.signal_type, signal.c.signal_at, signal.c.url
).where(signal.c.lead_id.in_(bindparam("lead_ids", expanding=True)))
_INSERT_STAGE_CHANGE = insert(stage_change)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# Scores


async def find_score(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(_SCORE, {"lead_id": lead_id})
    return result.mappings().first()


async def find_score_for_update(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(_SCORE_FOR_UPDATE, {"lead_id": lead_id})
    return result.mappings().first()


async def insert_score(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(_INSERT_SCORE, dict(values))


async def update_score(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(_UPDATE_SCORE, {**values, "key": lead_id})


async def insert_scores(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(_INSERT_SCORE, list(rows))


async def update_scores(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], *, scores_only: bool = False
) -> None:
    """Write whole rows back, one statement for all of them (every row has every column).

    `scores_only`: the rows' profile, `received_at` and `erased_at` are as stored; the other
    columns alone are written."""
    if not rows:
        return
    statement, columns = (
        (_UPDATE_SCORING, _SCORING_COLUMNS) if scores_only
        else (_UPDATE_WHOLE_SCORES, _SCORE_COLUMNS)
    )
    await session.execute(
        statement,
        [{"key": row["lead_id"], **{f"new_{name}": row[name] for name in columns}}
         for row in rows],
        execution_options={"synchronize_session": False},
    )


async def find_scores_for_update(
    session: AsyncSession, lead_ids: Sequence[str]
) -> dict[str, RowMapping]:
    result = await session.execute(_SCORES_FOR_UPDATE, {"lead_ids": sorted(lead_ids)})
    return {row["lead_id"]: row for row in result.mappings()}


async def claim_due_scores(
    session: AsyncSession, now: datetime, limit: int
) -> Sequence[RowMapping]:
    """Leads whose `next_check_at` has come, soonest first; locked rows are skipped (PostgreSQL)."""
    result = await session.execute(
        select(lead_score)
        .where(lead_score.c.next_check_at <= now, lead_score.c.erased_at.is_(None))
        .order_by(lead_score.c.next_check_at, lead_score.c.lead_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.mappings().all()


async def recheck_all_scores(session: AsyncSession, at: datetime) -> None:
    """Make every lead due for the sweep at `at` (a new scoring model was published)."""
    await session.execute(
        update(lead_score).where(lead_score.c.erased_at.is_(None)).values(next_check_at=at)
    )


# Signals


async def insert_signal(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """Store a signal; False when the lead already has a signal with this id."""
    result = await session.execute(
        insert_ignoring_conflicts(signal, _dialect(session), values)
    )
    return bool(getattr(result, "rowcount", 0))


async def signals_of(session: AsyncSession, lead_id: str) -> Sequence[RowMapping]:
    result = await session.execute(
        select(signal.c.signal_id, signal.c.signal_type, signal.c.signal_at, signal.c.url)
        .where(signal.c.lead_id == lead_id)
    )
    return result.mappings().all()


async def signals_of_leads(
    session: AsyncSession, lead_ids: Sequence[str]
) -> dict[str, list[RowMapping]]:
    by_lead: dict[str, list[RowMapping]] = {lead_id: [] for lead_id in lead_ids}
    if not lead_ids:
        return by_lead
    result = await session.execute(_SIGNALS_OF_LEADS, {"lead_ids": list(lead_ids)})
    for row in result.mappings():
        by_lead[row["lead_id"]].append(row)
    return by_lead


async def insert_new_signals(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> set[tuple[str, str]]:
    """Store signals, skipping those a lead has already; returns (lead id, signal id) of each
    one stored. One statement of many rows (SQLAlchemy's "insertmanyvalues")."""
    if not rows:
        return set()
    dialect: Any = postgresql if _dialect(session) == "postgresql" else sqlite
    result = await session.execute(
        dialect.insert(signal).on_conflict_do_nothing().returning(
            signal.c.lead_id, signal.c.signal_id
        ),
        list(rows),
    )
    return {(lead_id, signal_id) for lead_id, signal_id in result.all()}


async def delete_signals(session: AsyncSession, lead_id: str) -> None:
    await session.execute(delete(signal).where(signal.c.lead_id == lead_id))


# Scoring models


async def current_model(session: AsyncSession) -> RowMapping | None:
    result = await session.execute(
        select(scoring_model).order_by(scoring_model.c.id.desc()).limit(1)
    )
    return result.mappings().first()


async def find_model(session: AsyncSession, version: str) -> RowMapping | None:
    result = await session.execute(
        select(scoring_model).where(scoring_model.c.version == version)
    )
    return result.mappings().first()


async def insert_model(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(insert(scoring_model).values(**values))


async def insert_model_unless_published(
    session: AsyncSession, values: Mapping[str, Any]
) -> None:
    await session.execute(
        insert_ignoring_conflicts(
            scoring_model, _dialect(session), values, index_elements=["version"]
        )
    )


# Lifecycle


async def insert_stage_changes(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> None:
    if rows:
        await session.execute(_INSERT_STAGE_CHANGE, list(rows))


async def stage_history(session: AsyncSession, lead_id: str) -> Sequence[RowMapping]:
    result = await session.execute(
        select(stage_change).where(stage_change.c.lead_id == lead_id).order_by(stage_change.c.id)
    )
    return result.mappings().all()


async def last_mql_rules(session: AsyncSession, lead_id: str) -> list[str]:
    """The rules that made the lead MQL the last time it became MQL; none if it never did."""
    result = await session.execute(
        select(stage_change.c.rule_ids)
        .where(stage_change.c.lead_id == lead_id, stage_change.c.to_stage == "mql")
        .order_by(stage_change.c.id.desc())
        .limit(1)
    )
    rule_ids = result.scalar()
    return list(rule_ids or [])


# Sales feedback


async def insert_rejection(
    session: AsyncSession, values: Mapping[str, Any], rule_ids: Sequence[str]
) -> None:
    rejection_id = (
        await session.execute(insert(rejection).values(**values).returning(rejection.c.id))
    ).scalar_one()
    if rule_ids:
        await session.execute(
            insert(rejection_rule),
            [{"rejection_id": rejection_id, "rule_id": rule_id} for rule_id in set(rule_ids)],
        )


async def rejections_by_source(
    session: AsyncSession, since: datetime | None
) -> Sequence[RowMapping]:
    query = select(
        rejection.c.lead_source, rejection.c.outcome, rejection.c.reason_code,
        func.count().label("count"),
    ).group_by(rejection.c.lead_source, rejection.c.outcome, rejection.c.reason_code)
    if since is not None:
        query = query.where(rejection.c.recorded_at >= since)
    result = await session.execute(
        query.order_by(rejection.c.lead_source, rejection.c.outcome, rejection.c.reason_code)
    )
    return result.mappings().all()


async def rejections_by_rule(
    session: AsyncSession, since: datetime | None
) -> Sequence[RowMapping]:
    query = (
        select(
            rejection_rule.c.rule_id, rejection.c.outcome, rejection.c.reason_code,
            func.count().label("count"),
        )
        .join(rejection, rejection.c.id == rejection_rule.c.rejection_id)
        .group_by(rejection_rule.c.rule_id, rejection.c.outcome, rejection.c.reason_code)
    )
    if since is not None:
        query = query.where(rejection.c.recorded_at >= since)
    result = await session.execute(
        query.order_by(rejection_rule.c.rule_id, rejection.c.outcome, rejection.c.reason_code)
    )
    return result.mappings().all()


# The funnel report


async def funnel_cohort(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[Sequence[RowMapping], Sequence[RowMapping]]:
    """The leads received in [since, until) that were not erased (lead_id, profile,
    entered_at: when received, else first scored) and every stage change of theirs."""
    entered = func.coalesce(lead_score.c.received_at, lead_score.c.scored_at)
    cohort = (
        select(lead_score.c.lead_id)
        .where(entered >= since, entered < until, lead_score.c.erased_at.is_(None))
    )
    leads = await session.execute(
        select(lead_score.c.lead_id, lead_score.c.profile, entered.label("entered_at"))
        .where(lead_score.c.lead_id.in_(cohort))
    )
    changes = await session.execute(
        select(stage_change.c.lead_id, stage_change.c.to_stage, stage_change.c.changed_at)
        .where(stage_change.c.lead_id.in_(cohort))
    )
    return leads.mappings().all(), changes.mappings().all()


async def scores_received_between(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[RowMapping]:
    """The score rows of the leads received in [since, until) (else first scored), not erased."""
    entered = func.coalesce(lead_score.c.received_at, lead_score.c.scored_at)
    result = await session.execute(
        select(lead_score).where(entered >= since, entered < until,
                                 lead_score.c.erased_at.is_(None))
        .order_by(lead_score.c.lead_id)
    )
    return result.mappings().all()


async def channel_costs(session: AsyncSession) -> Sequence[RowMapping]:
    result = await session.execute(select(channel_cost).order_by(channel_cost.c.channel))
    return result.mappings().all()


async def find_channel_cost(session: AsyncSession, channel: str) -> RowMapping | None:
    result = await session.execute(select(channel_cost).where(channel_cost.c.channel == channel))
    return result.mappings().first()


async def save_channel_cost(session: AsyncSession, values: Mapping[str, Any]) -> None:
    """Insert or replace the cost of `values["channel"]`."""
    await session.execute(delete(channel_cost).where(channel_cost.c.channel == values["channel"]))
    await session.execute(insert(channel_cost).values(**values))


async def delete_channel_cost(session: AsyncSession, channel: str) -> bool:
    result = await session.execute(delete(channel_cost).where(channel_cost.c.channel == channel))
    return int(getattr(result, "rowcount", 0)) == 1
