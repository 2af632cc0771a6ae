"""What the router publishes about a lead is a path of the shared lifecycle (`shared.lifecycle`),
which the scorer applies: every flow's events, replayed in order, are moves the state machine
allows, and end where the README says (a disqualified lead recycled to nurturing)."""

from __future__ import annotations

from typing import Any

import pytest

from services.router import assignment_actions
from shared.events import EVENT_CLASSES, Bant, Stage
from shared.lifecycle import STAGE_AFTER_ROUTER_EVENT, stages_after
from tests.router.conftest import Router, scored, types_of

ROUTED_FROM: tuple[Stage, ...] = ("lead", "mql", "recycled")
"""The stages a lead the router is offered may be in at the scorer."""


async def events_of(router: Router, lead_id: str) -> list[str]:
    events: list[dict[str, Any]] = await router.events()
    return types_of([event for event in events if event["lead_id"] == lead_id])


async def offer_id(router: Router, lead_id: str) -> str:
    rows = await router.assignments(lead_id)
    return str(rows[-1]["id"])


@pytest.mark.parametrize("start", ROUTED_FROM)
async def test_each_flow_of_the_router_is_a_path_of_the_lifecycle(
    router: Router, start: Stage
) -> None:
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    for lead_id in ("disqualified", "rejected", "qualified"):
        await router.consume(scored(lead_id, clock=router.clock))
    await router.consume(scored("cold", "cold", clock=router.clock, score=5.0))
    first = await offer_id(router, "disqualified")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, first)
        await assignment_actions.disqualify(session, router.context, first, "no_budget", None)
        await assignment_actions.reject(session, router.context, await offer_id(router, "rejected"),
                             "wrong_territory", None)
    reoffered = await offer_id(router, "rejected")
    qualified = await offer_id(router, "qualified")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, reoffered)
        await assignment_actions.accept_assignment(session, router.context, qualified)
        await assignment_actions.mark_contacted(session, router.context, qualified)
        await assignment_actions.qualify(session, router.context, qualified,
                              Bant(budget="50k", authority="VP", need="routing", timing="Q2"))

    disqualified = await events_of(router, "disqualified")
    assert disqualified[-2:] == ["assignment.disqualified", "lead.nurture"]
    assert stages_after(start, disqualified)[-1] == "recycled"
    assert stages_after(start, await events_of(router, "rejected"))[-1] == "sal"
    assert stages_after(start, await events_of(router, "qualified"))[-1] == "sql"
    assert await events_of(router, "cold") == ["lead.nurture"]
    assert stages_after(start, ["lead.nurture"]) == ["recycled"]


def test_the_lifecycle_knows_every_event_of_the_router_that_moves_a_lead() -> None:
    published = {name for name in EVENT_CLASSES if name.startswith("assignment.")}
    published.add("lead.nurture")
    assert set(STAGE_AFTER_ROUTER_EVENT) <= published
    assert published - set(STAGE_AFTER_ROUTER_EVENT) == {
        "assignment.offered", "assignment.contacted", "assignment.escalated"}
