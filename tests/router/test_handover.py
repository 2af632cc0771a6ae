"""A qualified lead that finds no eligible AE is not lost: its hand-over is kept in the
database, retried by the timer loop with a bounded backoff until an AE is eligible, the manager
is told once, and the AE's decision lists every attempt that found nobody."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from services.router import assignment_actions, repository, roster, service
from services.router import handover as handover_retries
from services.router.escalation import EscalationTimer
from services.router.models import handover, lead, notification
from services.router.schemas import PersonFields
from services.router.settings import RouterSettings
from shared.db import Database
from shared.events import Bant
from tests.router.conftest import Router, scored, types_of

BANT = Bant(budget="50k", authority="VP Sales", need="routing", timing="Q2")


def test_the_retry_delay_doubles_and_is_bounded() -> None:
    settings = RouterSettings(handover_retry_seconds=30, handover_max_retry_seconds=600)
    delays = [handover_retries.handover_delay(attempts, settings).total_seconds()
              for attempts in (1, 2, 3, 4, 5, 6, 7, 10_000)]
    assert delays == [30, 60, 120, 240, 480, 600, 600, 600]


def test_the_attempt_log_keeps_the_first_and_the_latest_attempts() -> None:
    log: list[dict[str, Any]] = []
    for number in range(handover_retries.HANDOVER_LOG_LIMIT + 10):
        log = handover_retries.append_attempt(log, {"n": number})
    assert len(log) == handover_retries.HANDOVER_LOG_LIMIT
    assert log[0] == {"n": 0}
    assert log[1] == {"n": 11}
    assert log[-1] == {"n": handover_retries.HANDOVER_LOG_LIMIT + 9}


async def qualified_lead(router: Router) -> tuple[str, str]:
    """An SDR qualifies lead-1 while the only AE is offline: (the AE's id, the manager's)."""
    boss = await router.add_person("Boss", role="manager", webhook_url="http://127.0.0.1:9/boss")
    await router.add_team("AE", manager_email="boss@seller.example")
    closer = await router.add_person("Closer", role="ae", teams=["AE"], presence="offline")
    await router.add_sdr("Ada")
    await router.set_rules({"id": "all", "handoff_pool": "AE"})
    await router.consume(scored("lead-1", clock=router.clock))
    [offer] = await router.assignments("lead-1")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
        _, handed = await assignment_actions.qualify(session, router.context, offer["id"], BANT)
    assert handed is None
    return closer, boss


async def test_a_hand_over_waits_in_the_database_and_is_retried_until_an_ae_is_eligible(
    router: Router,
) -> None:
    closer, boss = await qualified_lead(router)
    asked = router.clock.now()
    [waiting] = await router.rows(handover)
    assert (waiting["status"], waiting["attempts"]) == ("waiting", 1)
    assert waiting["next_attempt_at"] == asked + timedelta(seconds=30)
    assert waiting["manager_notified_at"] == asked
    assert waiting["attempt_log"][0]["pools"][0]["excluded"] == {closer: ["presence_offline"]}
    [qualified] = await router.rows(lead)
    assert qualified["status"] == "qualified"

    # A restart: a new context and timer find the hand-over in the database.
    context = service.RouterContext.build(router.settings, router.context.outbox, router.clock)
    timer = EscalationTimer(router.db, context, interval=1, batch_size=10)
    tries = {30: 2, 90: 3, 210: 4}
    router.clock.set(asked + timedelta(seconds=29))
    assert (await timer.tick()).offers == []
    for seconds, attempts in tries.items():
        router.clock.set(asked + timedelta(seconds=seconds) - timedelta(microseconds=1))
        await timer.tick()
        assert (await router.rows(handover))[0]["attempts"] == attempts - 1
        router.clock.set(asked + timedelta(seconds=seconds))
        assert (await timer.tick()).offers == []
        [row] = await router.rows(handover)
        assert row["attempts"] == attempts
    assert row["next_attempt_at"] == asked + timedelta(seconds=210 + 240)

    async with router.db.transaction() as session:
        await roster.update_person(session, router.clock, closer,
                                   PersonFields(presence="available"), router.context.channels)
    router.clock.set(asked + timedelta(seconds=450))
    [offer] = (await timer.tick()).offers
    assert offer.sdr_id == closer
    [done] = await router.rows(handover)
    assert (done["status"], done["assignment_id"], done["next_attempt_at"]) == (
        "offered", offer.assignment_id, None)
    assert (await timer.tick()).offers == []
    _, ae_row = await router.assignments("lead-1")
    assert (ae_row["role"], ae_row["status"], ae_row["sdr_id"]) == ("ae", "offered", closer)
    earlier = ae_row["decision"]["earlier_attempts"]
    assert [entry["at"] for entry in earlier] == [
        (asked + timedelta(seconds=seconds)).isoformat() for seconds in (0, 30, 90, 210)]
    assert all(entry["pools"][0]["excluded"] == {closer: ["presence_offline"]}
               for entry in earlier)
    assert ae_row["decision"]["pools"][0]["rep_id"] == closer
    assert types_of(await router.events())[-1] == "assignment.offered"
    assert (await router.events())[-1]["data"]["role"] == "ae"
    told = [row for row in await router.rows(notification) if row["sdr_id"] == boss]
    assert [row["kind"] for row in told] == ["handover_waiting"]


async def test_a_hand_over_whose_lead_moved_on_is_closed(router: Router) -> None:
    closer, _ = await qualified_lead(router)
    async with router.db.transaction() as session:
        await repository.update_lead(session, "lead-1", {"status": "disqualified"})
        await roster.update_person(session, router.clock, closer,
                                   PersonFields(presence="available"), router.context.channels)
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    router.clock.advance(30)
    assert (await timer.tick()).offers == []
    [closed] = await router.rows(handover)
    assert (closed["status"], closed["next_attempt_at"]) == ("closed", None)


async def test_an_ae_turning_the_lead_down_with_no_other_ae_leaves_it_waiting(
    router: Router,
) -> None:
    await router.add_team("AE")
    first_ae = await router.add_person("Closer", role="ae", teams=["AE"])
    await router.add_sdr("Ada")
    await router.set_rules({"id": "all", "handoff_pool": "AE"})
    await router.consume(scored("lead-1", clock=router.clock))
    [offer] = await router.assignments("lead-1")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
        _, handed = await assignment_actions.qualify(session, router.context, offer["id"], BANT)
    assert handed is not None and handed.sdr_id == first_ae
    async with router.db.transaction() as session:
        _, next_offer = await assignment_actions.reject(
            session, router.context, handed.assignment_id, "conflict_of_interest", None)
    assert next_offer is None
    [waiting] = await router.rows(handover)
    assert (waiting["status"], waiting["from_assignment_id"]) == ("waiting", handed.assignment_id)
    assert waiting["attempt_log"][0]["pools"][0]["excluded"] == {first_ae: ["already_had_lead"]}

    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    router.clock.advance(30)
    assert (await timer.tick()).offers == []
    second_ae = await router.add_person("Second", role="ae", teams=["AE"])
    router.clock.advance(60)
    [offer_two] = (await timer.tick()).offers
    assert offer_two.sdr_id == second_ae


async def test_two_instances_retrying_at_once_hand_the_lead_over_once(router: Router) -> None:
    closer, _ = await qualified_lead(router)
    async with router.db.transaction() as session:
        await roster.update_person(session, router.clock, closer,
                                   PersonFields(presence="available"), router.context.channels)
    other_db = Database(router.settings.database_url)
    try:
        other = service.RouterContext.build(router.settings, router.context.outbox, router.clock)
        timers = [EscalationTimer(router.db, router.context, interval=1, batch_size=10),
                  EscalationTimer(other_db, other, interval=1, batch_size=10)]
        router.clock.advance(30)
        ticks = await asyncio.gather(*(timer.tick() for timer in timers))
    finally:
        await other_db.dispose()
    assert sum(len(tick.offers) for tick in ticks) == 1
    ae_rows = [row for row in await router.assignments("lead-1") if row["role"] == "ae"]
    assert [row["sdr_id"] for row in ae_rows] == [closer]
