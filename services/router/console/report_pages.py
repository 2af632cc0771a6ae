"""The reports pages (`/console/reports`, managers and the admin): speed to lead per hop,
SLA compliance day by day, fairness per pool, and the funnel read from the scorer.

The figures are `services.router.reports` over the period's assignment rows (the same as the
report routes of the API); the funnel is the scorer's `GET /v1/reports/funnel`. Each chart
has its table beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.router import reports, repository, roster
from services.router.console import charts, scorer_api
from services.router.console.pages import context_of, page, signed_in, to
from shared.app import RuntimeDep

routes = APIRouter(prefix="/console", include_in_schema=False)
HOP_WORDS = {
    "received_to_scored": "Received → scored", "scored_to_assigned": "Scored → assigned",
    "assigned_to_notified": "Assigned → notified", "notified_to_accepted": "Notified → accepted",
    "accepted_to_contacted": "Accepted → contacted",
}
FUNNEL_COUNTS = ("lead", "mql", "sal", "sql", "opportunity", "customer")
PERIODS = (7, 30, 90)
NONE = "\N{EN DASH}"


def hop_rows(overall: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per hop: system or human time, count, p50/p90/p99 in seconds."""
    return [{"hop": HOP_WORDS[name], "kind": "system" if name in reports.SYSTEM_HOPS else "human",
             **overall[name]} for name in HOP_WORDS if name in overall]


def sla_by_day(rows: Sequence[Mapping[str, Any]], since: datetime,
               until: datetime) -> list[dict[str, Any]]:
    """The accept SLA of the offers made each day of the period (UTC days)."""
    by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[f"{row['offered_at']:%Y-%m-%d}"].append(row)
    days = []
    day = datetime.combine(since.date(), time.min, tzinfo=since.tzinfo)
    while day < until:
        key = f"{day:%Y-%m-%d}"
        days.append({"day": key, "label": f"{day:%d %b}", **reports.sla(by_day[key])["accept"]})
        day += timedelta(days=1)
    return days


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 120:
        return f"{value:.3g} s"
    if value < 7200:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h" if value < 172800 else f"{value / 86400:.3g} d"


def _share(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.0f}%"


def funnel_rows(groups: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A table row per source or channel: counts, conversions, medians and costs, worded."""
    rows = []
    for name, summary in groups.items():
        cost = summary.get("cost") or {}
        currency = cost.get("currency", "")
        rows.append({
            "name": name, "counts": [summary["counts"].get(stage, 0) for stage in FUNNEL_COUNTS],
            "lead_to_customer": _share(summary["conversion"].get("lead_to_customer")),
            "conversion": {step: _share(rate) for step, rate in summary["conversion"].items()},
            "medians": {stage: _seconds(value)
                        for stage, value in summary["median_seconds_in_stage"].items()},
            "cost": {key: (f"{float(cost[key]):.2f} {currency}" if cost.get(key) is not None
                           else NONE) for key in ("cost_per_lead", "cost_per_sql",
                                                 "cost_per_customer")} if cost else None,
        })
    return rows


async def _funnel(request: Request, since: datetime, until: datetime) -> dict[str, Any]:
    try:
        report = await scorer_api.funnel(context_of(request).settings, since.isoformat(),
                                         until.isoformat())
    except scorer_api.ScorerUnavailableError as error:
        return {"funnel_error": f"The funnel could not be read: {error}"}
    overall = report["overall"]["counts"]
    return {
        "funnel_chart": charts.bars(
            "Leads reaching each stage",
            [charts.Bar(stage.upper() if stage != "lead" else "Leads",
                        [float(overall.get(stage, 0))]) for stage in FUNNEL_COUNTS],
            ["leads"], description="Leads of the period that reached each funnel stage"),
        "funnel_stages": FUNNEL_COUNTS,
        "funnel_overall": funnel_rows({"All leads": report["overall"]})[0],
        "funnel_by_source": funnel_rows(report["by_source"]),
        "funnel_by_channel": funnel_rows(report["by_channel"]),
    }


@routes.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request, runtime: RuntimeDep,
                       days: Annotated[int, Query(ge=1, le=366)] = 7) -> Response:
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return to("/console/sign-in")
    if not viewer.sees_reports:
        return page(request, "message.html", {
            "viewer": viewer, "title": "Managers only",
            "text": "The reports are for managers and the admin."}, 403)
    context = context_of(request)
    until = context.clock.now()
    since = until - timedelta(days=days)
    async with runtime.db.reading() as session:
        rows = [dict(row) for row in await repository.assignments_between(session, since, until)]
        pools, names = await roster.fairness_pools(session, context.rule_cache)
    hops = hop_rows(reports.speed_to_lead(rows)["overall"])
    days_sla = sla_by_day(rows, since, until)
    fairness = reports.fairness(rows, pools, since, until, names)["by_pool"]
    for pool in fairness:
        pool["chart"] = charts.bars(
            f"Fairness in the {pool['pool']} pool",
            [charts.Bar(rep["name"] or rep["rep_id"][:8], [rep["actual_share"] * 100],
                        rep["target_share"] * 100) for rep in pool["reps"]],
            ["actual share"], unit="%",
            description=f"Each eligible rep's actual share of the {pool['pool']} pool's leads "
                        "against their target share")
    return page(request, "reports.html", {
        "viewer": viewer, "title": "Reports", "days": days, "periods": PERIODS,
        "since": since, "until": until, "hops": hops, "seconds": _seconds, "share": _share,
        "speed_chart": charts.bars(
            "Speed to lead per hop (median seconds)",
            [charts.Bar(hop["hop"], [hop["p50"] or 0.0]) for hop in hops], ["median"],
            unit=" s", description="Median seconds of each hop, system time then human time"),
        "sla_days": days_sla,
        "sla_chart": charts.line(
            "Accept SLA met, day by day",
            [(day["label"], (day["met_rate"] or 0.0) * 100 if day["met_rate"] is not None
              else None) for day in days_sla], top=100.0, unit="%",
            description="Share of each day's offers accepted within the SLA"),
        "fairness": fairness,
        **await _funnel(request, since, until),
    })
