"""SLA expiry and acceptance, driven with a manual clock against a real database."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from services.router import assignment_actions
from services.router.escalation import escalate_due
from services.router.models import escalation, lead, notification
from shared.problems import ProblemError
from tests.router.conftest import Router, scored, types_of

SLA = timedelta(seconds=120)
"""The default time to accept a hot lead."""


async def escalate(router: Router) -> list[str]:
    """Run one escalation pass at the clock's time; the ids of the offers it escalated."""
    async with router.db.transaction() as session:
        done = await escalate_due(session, router.context, router.clock.now())
    return [item.from_assignment_id for item in done]


async def accept(router: Router, assignment_id: str) -> None:
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, assignment_id)


async def test_an_offer_escalates_at_its_deadline_to_another_sdr(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    [first] = await router.assignments("lead-1")
    assert first["sdr_id"] == ada

    router.clock.set(first["deadline_at"] - timedelta(seconds=1))
    assert await escalate(router) == []
    assert [row["status"] for row in await router.assignments("lead-1")] == ["offered"]

    router.clock.set(first["deadline_at"])
    assert await escalate(router) == [first["id"]]
    lapsed, second = await router.assignments("lead-1")
    assert lapsed["status"] == "escalated"
    assert lapsed["closed_at"] == router.clock.now()
    assert second["sdr_id"] == bob
    assert second["status"] == "offered"
    assert second["attempt"] == 2
    assert second["deadline_at"] == router.clock.now() + SLA
    [record] = await router.rows(escalation)
    assert record["from_assignment_id"] == first["id"]
    assert record["to_assignment_id"] == second["id"]
    assert (record["from_sdr_id"], record["to_sdr_id"]) == (ada, bob)
    assert record["reason"] == "sla_expired"
    events = await router.events()
    assert types_of(events) == ["assignment.offered", "assignment.escalated", "assignment.offered"]
    assert events[1]["data"]["to_assignment_id"] == second["id"]
    assert events[2]["data"]["sdr_id"] == bob
    statuses = {row["assignment_id"]: row["status"] for row in await router.rows(notification)}
    assert statuses == {first["id"]: "cancelled", second["id"]: "pending"}


async def test_an_escalated_lead_never_goes_back_to_the_sdr_who_let_it_lapse(
    router: Router,
) -> None:
    roster = {await router.add_sdr("Ada"), await router.add_sdr("Bob"), await router.add_sdr("Cy")}
    await router.consume(scored("lead-1", clock=router.clock))
    for _ in range(3):
        router.clock.advance(SLA)
        await escalate(router)
    owners = [row["sdr_id"] for row in await router.assignments("lead-1")]
    assert len(owners) == 4
    assert all(previous != following for previous, following in itertools.pairwise(owners))
    assert set(owners[:3]) == roster
    assert owners[3] == owners[0]


async def test_with_nobody_else_active_the_lead_is_stranded_and_the_event_says_so(
    router: Router,
) -> None:
    ada = await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    router.clock.advance(SLA)
    await escalate(router)
    [lapsed] = await router.assignments("lead-1")
    assert lapsed["status"] == "escalated"
    [record] = await router.rows(escalation)
    assert (record["from_sdr_id"], record["to_sdr_id"], record["to_assignment_id"]) == (
        ada, None, None,
    )
    event = (await router.events())[-1]
    assert event["type"] == "assignment.escalated"
    assert event["data"]["to_sdr_id"] is None
    [stranded] = await router.rows(lead)
    assert stranded["status"] == "stranded"


async def test_accepting_in_time_stops_the_clock(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    [offer] = await router.assignments("lead-1")
    router.clock.advance(SLA - timedelta(seconds=1))
    await accept(router, offer["id"])
    router.clock.advance(SLA * 2)
    assert await escalate(router) == []
    [accepted] = await router.assignments("lead-1")
    assert accepted["status"] == "accepted"
    assert accepted["accepted_at"] == offer["deadline_at"] - timedelta(seconds=1)
    event = (await router.events())[-1]
    assert event["type"] == "assignment.accepted"
    assert event["data"]["sdr_id"] == offer["sdr_id"]
    assert event["data"]["within_sla"] is True
    [queued] = await router.rows(notification)
    assert queued["status"] == "cancelled"


async def test_a_late_acceptance_before_the_timer_ran_is_outside_the_sla(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    [offer] = await router.assignments("lead-1")
    router.clock.advance(SLA + timedelta(seconds=1))
    await accept(router, offer["id"])
    assert (await router.events())[-1]["data"]["within_sla"] is False


async def test_an_escalated_or_accepted_offer_cannot_be_accepted(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    router.clock.advance(SLA)
    await escalate(router)
    lapsed, current = await router.assignments("lead-1")
    with pytest.raises(ProblemError) as refused:
        await accept(router, lapsed["id"])
    assert refused.value.status == 409
    assert refused.value.extensions["assignment_status"] == "escalated"
    await accept(router, current["id"])
    with pytest.raises(ProblemError) as twice:
        await accept(router, current["id"])
    assert twice.value.status == 409
    with pytest.raises(ProblemError) as missing:
        await accept(router, "no-such-assignment")
    assert missing.value.status == 404
    assert types_of(await router.events()).count("assignment.accepted") == 1


ROUNDS = 200


async def test_accept_racing_escalation_has_exactly_one_winner(router: Router) -> None:
    """200 times: accepted XOR escalated, never both, never before the deadline."""
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    winners = {"accept": 0, "escalate": 0}
    for round_number in range(ROUNDS):
        lead_id = f"lead-{round_number}"
        await router.consume(scored(lead_id, clock=router.clock))
        [offer] = await router.assignments(lead_id)
        router.clock.set(offer["deadline_at"] - timedelta(microseconds=1))
        assert await escalate(router) == [], "escalated before its deadline"
        router.clock.set(offer["deadline_at"])

        accepted, escalated = await asyncio.gather(
            accept(router, offer["id"]), escalate(router), return_exceptions=True
        )

        accept_won = accepted is None
        escalate_won = escalated == [offer["id"]]
        if not accept_won:
            assert isinstance(accepted, ProblemError) and accepted.status == 409, accepted
        assert accept_won != escalate_won, (round_number, accepted, escalated)
        rows = await router.assignments(lead_id)
        if accept_won:
            assert [row["status"] for row in rows] == ["accepted"]
            winners["accept"] += 1
        else:
            assert [row["status"] for row in rows] == ["escalated", "offered"]
            await accept(router, rows[1]["id"])
            winners["escalate"] += 1
    assert sum(winners.values()) == ROUNDS


async def test_one_batch_of_lapsed_offers_spreads_over_the_roster(router: Router) -> None:
    """The timer reads the roster once per batch and keeps it current as it re-offers: round
    robin goes on across the batch, never back to the rep who let the lead lapse."""
    ada, bob, cy = [await router.add_sdr(name) for name in ("Ada", "Bob", "Cy")]
    for number in range(6):
        router.clock.advance(1)
        await router.consume(scored(f"lead-{number}", clock=router.clock))
    router.clock.advance(SLA)
    assert len(await escalate(router)) == 6
    first_owners, new_owners = [], []
    for number in range(6):
        lapsed, current = await router.assignments(f"lead-{number}")
        first_owners.append(lapsed["sdr_id"])
        new_owners.append(current["sdr_id"])
    first = first_owners[0]
    order = {ada: "ada", bob: "bob", cy: "cy"}
    rotation = [order[rep] for rep in first_owners]
    assert rotation == [rotation[0], rotation[1], rotation[2]] * 2
    assert len(set(rotation[:3])) == 3
    a, b, c = first, first_owners[1], first_owners[2]
    # Who was assigned longest ago and did not let this lead lapse, offer after offer.
    assert new_owners == [b, a, b, c, a, b]
