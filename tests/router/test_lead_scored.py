"""`lead.scored` through the shared consumer loop, against a real migrated database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from services.router.escalation import EscalationTimer
from services.router.models import assignment, lead, notification, sdr
from tests.router.conftest import Router, scored, types_of


async def test_a_hot_lead_is_offered_with_its_deadline_notification_and_event(
    router: Router,
) -> None:
    ada = await router.add_sdr("Ada", webhook_url="http://127.0.0.1:9/ada")
    await router.consume(scored("lead-1", "hot", clock=router.clock))

    [offer] = await router.assignments("lead-1")
    assert offer["sdr_id"] == ada
    assert offer["status"] == "offered"
    assert offer["attempt"] == 1
    assert offer["offered_at"] == router.clock.now()
    assert offer["deadline_at"] == router.clock.now() + timedelta(seconds=120)
    assert offer["lead_snapshot"]["company"] == "Analytical Engines"
    [queued] = await router.rows(notification)
    assert queued["assignment_id"] == offer["id"]
    assert queued["url"] == "http://127.0.0.1:9/ada"
    assert queued["status"] == "pending"
    assert queued["next_attempt_at"] == router.clock.now()
    assert queued["payload"]["type"] == "assignment.offered"
    assert queued["payload"]["lead"]["email"] == "lead-1@buyer.example"
    assert queued["payload"]["temperature"] == "hot"
    assert queued["payload"]["accept_url"].startswith(
        f"http://127.0.0.1:8703/v1/assignments/{offer['id']}/accept?token="
    )
    [event] = await router.events()
    assert event["type"] == "assignment.offered"
    assert event["producer"] == "router"
    assert event["lead_id"] == "lead-1"
    assert event["data"]["assignment_id"] == offer["id"]
    assert event["data"]["sdr_id"] == ada
    [stored] = await router.rows(sdr)
    assert stored["last_assigned_at"] == router.clock.now()


async def test_a_warm_lead_is_offered_and_a_cold_lead_is_not(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.consume(
        scored("warm-1", "warm", clock=router.clock), scored("cold-1", "cold", clock=router.clock)
    )
    assert len(await router.assignments("warm-1")) == 1
    assert await router.assignments("cold-1") == []
    statuses = {row["id"]: row["status"] for row in await router.rows(lead)}
    assert statuses == {"warm-1": "routed", "cold-1": "cold"}
    events = await router.events()
    assert types_of(events) == ["assignment.offered", "lead.nurture"]
    assert events[1]["lead_id"] == "cold-1"
    assert events[1]["data"]["reason"] == "cold"


async def test_redelivered_event_gives_one_assignment(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    event = scored("lead-1", clock=router.clock)
    consumer = router.consumer()
    await router.consume(event, consumer=consumer)
    await router.consume(event, consumer=consumer)
    assert len(await router.assignments("lead-1")) == 1
    assert len(await router.rows(notification)) == 1
    assert consumer.duplicates == 1


async def test_a_lead_with_an_active_assignment_is_not_offered_again(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    router.clock.advance(10)
    await router.consume(scored("lead-1", clock=router.clock, score=95))
    [offer] = await router.assignments("lead-1")
    assert offer["lead_snapshot"]["score"] == 87
    [stored] = await router.rows(lead)
    assert stored["score"] == 95


async def test_hot_leads_go_round_robin(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    for number in range(4):
        router.clock.advance(1)
        await router.consume(scored(f"lead-{number}", clock=router.clock))
    owners = [(await router.assignments(f"lead-{n}"))[0]["sdr_id"] for n in range(4)]
    assert owners == [ada, bob, ada, bob]


async def test_round_robin_holds_within_one_batch(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    await router.consume(*(scored(f"lead-{n}", clock=router.clock) for n in range(3)))
    owners = [(await router.assignments(f"lead-{n}"))[0]["sdr_id"] for n in range(3)]
    assert owners == [ada, bob, ada]


async def test_a_lead_waits_when_no_sdr_is_active_and_is_offered_once_one_is(
    router: Router,
) -> None:
    await router.consume(scored("lead-1", clock=router.clock))
    assert await router.assignments("lead-1") == []
    [waiting] = await router.rows(lead)
    assert waiting["status"] == "waiting"
    assert waiting["waiting_since"] == router.clock.now()
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    assert (await timer.tick()).offers == []

    ada = await router.add_sdr("Ada")
    tick = await timer.tick()
    assert [offer.sdr_id for offer in tick.offers] == [ada]
    [offer] = await router.assignments("lead-1")
    assert offer["sdr_id"] == ada
    [routed] = await router.rows(lead)
    assert routed["status"] == "routed"
    assert routed["waiting_since"] is None
    assert types_of(await router.events()) == ["assignment.offered"]


async def test_the_database_refuses_a_second_active_assignment(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    [first] = await router.assignments("lead-1")
    second = {
        **first, "id": "another", "attempt": 2, "status": "offered",
    }
    with pytest.raises(IntegrityError):
        async with router.db.transaction() as session:
            await session.execute(insert(assignment).values(**second))
    with pytest.raises(IntegrityError):
        async with router.db.transaction() as session:
            await session.execute(insert(assignment).values(**{**second, "status": "accepted"}))
    async with router.db.transaction() as session:
        await session.execute(insert(assignment).values(**{**second, "status": "escalated"}))
    assert [row["sdr_id"] for row in await router.assignments("lead-1")] == [ada, ada]
