"""`POST /v1/rules/replay` (admin): the what-if replay of a draft rule set over the last days'
leads, before publishing it (`services.router.replay`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import replay, repository, roster, roster_repository
from services.router.api_dependencies import ERRORS, PROBLEM, AdminDep, ContextDep
from services.router.routing import LeadFacts, Rep
from services.router.rules import RuleSet
from services.router.service import lead_facts
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1/rules", tags=["rules"])


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "days": 30, "rules": {"rules": [{"id": "all", "pool": "SDR pool"}]}}]})

    rules: RuleSet = Field(description="The draft rule set, as `PUT /v1/rules` takes it")
    days: int = Field(default=30, ge=1, le=90, description="Replay the leads of the last days")


def _facts(lead: RowMapping, snapshot: dict[str, Any]) -> Any:
    """The lead's facts under a rule set, with the score and temperature it was offered at."""
    row = {**dict(lead), "score": snapshot.get("score", lead["score"]),
           "temperature": snapshot.get("temperature", lead["temperature"])}

    def facts(rule_set: RuleSet) -> LeadFacts:
        return lead_facts(row, rule_set)  # type: ignore[arg-type]
    return facts


async def _pools(
    session: AsyncSession, rule_sets: list[RuleSet], sdrs: Sequence[RowMapping]
) -> dict[str | None, list[Rep]]:
    pools: dict[str | None, list[Rep]] = {None: [roster.rep_of(row) for row in sdrs]}
    for name in sorted({name for rule_set in rule_sets for name in rule_set.pools()}):
        team = await roster_repository.find_team_by_name(session, name)
        if team is None:
            raise ProblemError(422, "Unknown team", f"The rules name a pool {name!r} that is "
                               "not a team.", slug="unknown-team", team=name)
        members = set(await roster_repository.team_members(session, team["id"]))
        pools[name] = [roster.rep_of(row) for row in sdrs if row["id"] in members]
    return pools


@routes.post("/replay", tags=["rules"], responses={**ERRORS, 422: PROBLEM},
             summary="Replay a draft rule set over the last days' leads, against the rules "
                     "in force")
async def replay_rules(body: ReplayRequest, runtime: RuntimeDep, context: ContextDep,
                       _: AdminDep) -> dict[str, Any]:
    """Per rep: leads actually offered, under the current rules and under the draft (both
    replayed on today's roster, everyone available); the leads that would change rep or go
    unrouted; each pool's largest gap between actual and target share. Nothing is stored."""
    until = context.clock.now()
    since = until - timedelta(days=body.days)
    async with runtime.db.reading() as session:
        current = (await roster.current_rules(session, context.rule_cache))[1]
        people = await roster_repository.list_sdrs(session)
        pools = await _pools(session, [current, body.rules],
                             [row for row in people if row["role"] == "sdr"])
        # Up to now included: a lead offered this very moment is history too.
        rows = await repository.assignments_between(session, since,
                                                    until + timedelta(microseconds=1))
        offers = sorted((row for row in rows if row["attempt"] == 1 and row["role"] == "sdr"),
                        key=lambda row: (row["offered_at"], row["id"]))
        leads = await repository.find_leads(session, [row["lead_id"] for row in offers])
        names = {row["id"]: row["name"] for row in people}
    replayed = [
        replay.ReplayLead(row["lead_id"], row["offered_at"], row["sdr_id"],
                          _facts(leads[row["lead_id"]], row["lead_snapshot"] or {}))
        for row in offers
        if row["lead_id"] in leads and leads[row["lead_id"]]["status"] != "erased"
    ]
    return {"since": since, "until": until,
            **replay.compare(replayed, current, body.rules, pools, names)}
