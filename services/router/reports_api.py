"""router's report endpoints: speed to lead, SLA and fairness over a period
(`/v1/reports/...`, admin only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.router import (
    reports,
    repository,
    roster,
)
from services.router.api_dependencies import (
    ERRORS,
    AdminDep,
    ContextDep,
)
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.problems import ProblemError
from shared.request_types import DateTimeText

routes = APIRouter()


# Reports


Since = Annotated[DateTimeText | None,
                  Query(description="Start of the period (default: 7 days ago)")]
Until = Annotated[DateTimeText | None, Query(description="End of the period (default: now)")]


def _period(context: RouterContext, since: datetime | None,
            until: datetime | None) -> tuple[datetime, datetime]:
    end = until or context.clock.now()
    start = since or end - timedelta(days=7)
    if start.tzinfo is None or end.tzinfo is None:
        raise ProblemError(422, "Invalid request", "since and until need a timezone offset.",
                           slug="invalid-request")
    return start, end


async def _assignments_of_period(
    runtime: RuntimeDep, context: RouterContext, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime, list[dict[str, Any]]]:
    """The period (`_period`) and the assignments offered in it."""
    start, end = _period(context, since, until)
    async with runtime.db.reading() as session:
        rows = await repository.assignments_between(session, start, end)
    return start, end, [dict(row) for row in rows]


@routes.get("/reports/speed-to-lead", tags=["reports"], responses=ERRORS,
            summary="p50/p90/p99 per hop, overall and per team, rep and source")
async def speed_to_lead(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                        since: Since = None, until: Until = None) -> dict[str, Any]:
    start, end, plain = await _assignments_of_period(runtime, context, since, until)
    return {"since": start, "until": end, **reports.speed_to_lead(plain)}


@routes.get("/reports/sla", tags=["reports"], responses=ERRORS,
            summary="SLA met / breached / escalated counts and rates")
async def sla_report(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                     since: Since = None, until: Until = None) -> dict[str, Any]:
    start, end, plain = await _assignments_of_period(runtime, context, since, until)
    return {"since": start, "until": end, **reports.sla(plain)}


@routes.get("/reports/fairness", tags=["reports"], responses=ERRORS,
            summary="Actual vs target share of leads per rep, per pool the rules use")
async def fairness_report(runtime: RuntimeDep, context: ContextDep, _: AdminDep,
                          since: Since = None, until: Until = None) -> dict[str, Any]:
    """Target shares are among each pool's eligible reps (inactive or capacity 0: none)."""
    start, end = _period(context, since, until)
    async with runtime.db.reading() as session:
        rows = await repository.assignments_between(session, start, end)
        pools, names = await roster.fairness_pools(session, context.rule_cache)
    plain = [dict(row) for row in rows]
    return {"since": start, "until": end,
            **reports.fairness(plain, pools, start, end, names)}
