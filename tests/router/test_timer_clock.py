"""The timer loop goes by the database's clock, not the process's: two router instances whose
clocks are an hour apart each way still fire a timer once, when the database says it is due."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from services.router.escalation import DatabaseClock, EscalationTimer, InjectedClock
from services.router.models import OUTBOX, assignment
from services.router.service import RouterContext
from shared.clock import ManualClock
from shared.db import Database, database_now
from shared.outbox import Outbox
from tests.router.conftest import Router, router_settings, scored

SKEW = timedelta(hours=1)


@asynccontextmanager
async def instance(url: str, clock: ManualClock, accept_seconds: float) -> AsyncIterator[Router]:
    """One router instance: its own engine and its own (skewed) process clock."""
    settings = router_settings(url, sla_accept_seconds=accept_seconds)
    db = Database(url)
    outbox = Outbox(OUTBOX, topic=settings.topics.assignments, shards=settings.outbox_shards,
                    clock=clock)
    try:
        yield Router(db, clock, settings, RouterContext.build(settings, outbox, clock))
    finally:
        await db.dispose()


async def test_database_now_is_the_servers_clock_in_utc(router_url: str) -> None:
    db = Database(router_url)
    try:
        async with db.transaction() as session:
            first = await database_now(session)
        await asyncio.sleep(0.01)
        async with db.reading() as session:
            second = await database_now(session)
    finally:
        await db.dispose()
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert abs(first - datetime.now(UTC)) < timedelta(seconds=5)
    assert second > first


async def test_two_instances_with_skewed_clocks_fire_a_timer_once_at_the_database_time(
    router_url: str,
) -> None:
    accept = 4.0
    start = datetime.now(UTC)
    async with (
        instance(router_url, ManualClock(start), accept) as in_step,
        instance(router_url, ManualClock(start + SKEW), accept) as ahead,
        instance(router_url, ManualClock(start - SKEW), accept) as behind,
    ):
        await in_step.add_sdr("Ada")
        await in_step.consume(scored("lead-1", clock=in_step.clock))
        [offer] = await in_step.assignments("lead-1")
        assert offer["deadline_at"] == start + timedelta(seconds=accept)
        timers = [EscalationTimer(router.db, router.context, interval=1, batch_size=10,
                                  clock=DatabaseClock()) for router in (ahead, behind)]

        async def tick_both() -> int:
            ticks = await asyncio.gather(*(timer.tick() for timer in timers))
            return sum(len(tick.escalations) for tick in ticks)

        # The instance an hour ahead would fire now by its own clock; by the database's,
        # the deadline has not come.
        assert ahead.clock.now() > offer["deadline_at"]
        assert await tick_both() == 0
        assert (await in_step.assignments("lead-1"))[0]["status"] == "offered"

        while datetime.now(UTC) <= offer["deadline_at"]:
            await asyncio.sleep(0.05)
        assert await tick_both() == 1
        assert await tick_both() == 0
        [lapsed] = await in_step.rows(assignment)
        assert lapsed["status"] == "escalated"
        assert offer["deadline_at"] <= lapsed["closed_at"] <= datetime.now(UTC)


async def test_an_injected_clock_drives_the_timer_in_tests(router_url: str) -> None:
    clock = ManualClock()
    async with instance(router_url, clock, 120) as router:
        await router.add_sdr("Ada")
        await router.consume(scored("lead-1", clock=clock))
        timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
        assert isinstance(timer.clock, InjectedClock)
        assert (await timer.tick()).escalations == []
        clock.advance(120)
        [escalated] = (await timer.tick()).escalations
        [lapsed] = await router.rows(assignment)
        assert lapsed["closed_at"] == clock.now()
        assert escalated.from_assignment_id == lapsed["id"]


async def test_the_timer_loop_reads_whether_anything_is_due_before_it_ticks(
    router: Router,
) -> None:
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10,
                            clock=InjectedClock(router.clock))
    assert not await timer.due(), "nothing pending"
    await router.consume(scored("waiting-lead", clock=router.clock))
    assert await timer.due(), "a lead waits for a rep: tried on every tick"
    await router.add_sdr("Ada")
    await timer.tick()
    [offer] = await router.assignments("waiting-lead")
    assert not await timer.due(), "the offer's deadline is still to come"
    router.clock.advance(offer["deadline_at"] - router.clock.now() - timedelta(seconds=1))
    assert not await timer.due()
    router.clock.advance(timedelta(seconds=1))
    assert await timer.due(), "the deadline has come"
    assert len((await timer.tick()).escalations) == 1
