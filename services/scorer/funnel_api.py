"""scorer's funnel report and the channel costs it divides (admin token).

`GET /v1/reports/funnel`: lead -> MQL -> SAL -> SQL -> opportunity -> customer per source
and channel over a period (`services.scorer.funnel`). Opportunity and customer come from the
CRM through `POST /v1/leads/{id}/stage`. `PUT /v1/channel-costs/{channel}` sets what a lead
of a channel costs; every change is in the audit log.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status

from services.scorer import repository
from services.scorer.funnel import ChannelCost, funnel_leads, funnel_report
from services.scorer.models import AUDIT
from services.scorer.schemas import ChannelCostBody, ChannelCostView, FunnelReport
from shared import audit
from shared.app import RuntimeDep
from shared.auth import require_admin
from shared.problems import ProblemError
from shared.request_types import DateTimeText

routes = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])

DEFAULT_PERIOD = timedelta(days=30)
Channel = Annotated[str, Path(min_length=1, max_length=100,
                              description="The leads' `attribution.channel`, e.g. `ads`")]
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid period or body (problem details)"}}


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def _cost_view(row: Any) -> ChannelCostView:
    return ChannelCostView(channel=row["channel"], currency=row["currency"],
                           cost_per_lead=Decimal(row["cost_per_lead_cents"]) / 100,
                           updated_at=row["updated_at"])


@routes.get("/reports/funnel", response_model=FunnelReport, tags=["reports"], responses=INVALID,
            summary="Funnel counts, conversion, time in stage and cost, per source and channel")
async def funnel(
    runtime: RuntimeDep,
    since: Annotated[DateTimeText | None, Query(
        description="Leads received from then on; default 30 days before `until`")] = None,
    until: Annotated[DateTimeText | None, Query(
        description="... and before then; default now")] = None,
) -> FunnelReport:
    end = until or runtime.clock.now()
    start = since or end - DEFAULT_PERIOD
    if start >= end:
        raise ProblemError(422, "Invalid period", "`since` must be before `until`.",
                           slug="invalid-period")
    async with runtime.db.reading() as session:
        leads, changes = await repository.funnel_cohort(session, start, end)
        costs = {row["channel"]: ChannelCost(Decimal(row["cost_per_lead_cents"]) / 100,
                                             row["currency"])
                 for row in await repository.channel_costs(session)}
    report = funnel_report(funnel_leads([dict(row) for row in leads],
                                        [dict(row) for row in changes]), costs)
    return FunnelReport.model_validate({"since": start, "until": end, **report})


@routes.get("/channel-costs", response_model=list[ChannelCostView], tags=["reports"],
            summary="What a lead of each channel costs")
async def list_channel_costs(runtime: RuntimeDep) -> list[ChannelCostView]:
    async with runtime.db.reading() as session:
        return [_cost_view(row) for row in await repository.channel_costs(session)]


@routes.put("/channel-costs/{channel}", response_model=ChannelCostView, tags=["reports"],
            responses=INVALID, summary="Set what a lead of a channel costs")
async def set_channel_cost(channel: Channel, body: ChannelCostBody,
                           runtime: RuntimeDep) -> ChannelCostView:
    now = runtime.clock.now()
    values = {"channel": channel, "cost_per_lead_cents": _cents(body.cost_per_lead),
              "currency": body.currency, "updated_at": now}
    async with runtime.db.transaction() as session:
        before = await repository.find_channel_cost(session, channel)
        await repository.save_channel_cost(session, values)
        await audit.record(session, AUDIT, at=now, action="channel_cost.set",
                           subject=f"channel-cost:{channel}",
                           before=None if before is None else _audited(before),
                           after=_audited(values))
    return _cost_view(values)


@routes.delete("/channel-costs/{channel}", status_code=status.HTTP_204_NO_CONTENT,
               tags=["reports"], summary="Forget a channel's cost",
               responses={404: {"description": "No cost is set for it (problem details)"}})
async def delete_channel_cost(channel: Channel, runtime: RuntimeDep) -> Response:
    now = runtime.clock.now()
    async with runtime.db.transaction() as session:
        before = await repository.find_channel_cost(session, channel)
        if before is None:
            raise ProblemError(404, "No cost for this channel",
                               f"No cost per lead is set for the channel {channel!r}.")
        await repository.delete_channel_cost(session, channel)
        await audit.record(session, AUDIT, at=now, action="channel_cost.deleted",
                           subject=f"channel-cost:{channel}", before=_audited(before))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _audited(row: Any) -> dict[str, Any]:
    return {"cost_per_lead_cents": row["cost_per_lead_cents"], "currency": row["currency"]}
