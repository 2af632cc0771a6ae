"""The SLA timer: offers nobody accepted in time move on to the next SDR.

Deadlines live in `router_assignment.deadline_at`, so a restart loses none: every
`timer_interval_seconds` the `escalation-timer` loop claims the offers whose deadline passed
and escalates each in one transaction with everything it implies. The same loop then offers
leads that were `waiting` for an active SDR and retries hand-overs waiting for an AE. Each
interval it first reads, in one statement, the earliest thing due (`EscalationTimer.due`),
and does nothing more while that is still to come.
`escalate_due` and `EscalationTimer.tick` are what a test calls, with a `ManualClock`,
instead of sleeping.

The loop goes by the database's clock (`DatabaseClock`), not the process's: several router
instances whose clocks disagree still fire each timer once, when the database says it is
due. Tests hand it their injected clock instead (`InjectedClock`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import (
    delivery_repository,
    offers,
    repository,
    roster,
    roster_repository,
    service,
)
from services.router.handover import retry_handovers
from services.router.service import Offer, RouterContext
from shared import tracing
from shared.clock import Clock
from shared.db import Database, database_now, new_id
from shared.events import AssignmentEscalated, AssignmentEscalatedData
from shared.loops import repeat
from shared.metrics import count_after_commit

SLA_EXPIRED = "sla_expired"


class TimerClock(Protocol):
    """Where the timer loop reads the time, inside the transaction that acts on it."""

    async def now(self, session: AsyncSession) -> datetime: ...


class DatabaseClock:
    """The database server's clock: what the timer loop goes by in production."""

    async def now(self, session: AsyncSession) -> datetime:
        return await database_now(session)


class InjectedClock:
    """An injected `Clock` (a test's `ManualClock`) as the timer loop's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def now(self, session: AsyncSession) -> datetime:
        return self.clock.now()


@dataclass(frozen=True)
class Escalation:
    """An offer that lapsed, and where its lead went (nowhere when `to_sdr_id` is None)."""

    lead_id: str
    from_assignment_id: str
    from_sdr_id: str
    to_assignment_id: str | None
    to_sdr_id: str | None
    queued_team_id: str | None = None


@dataclass(frozen=True)
class Tick:
    escalations: list[Escalation] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    reminders: int = 0
    contact_breaches: int = 0


def next_escalation(reoffers_so_far: int, max_reoffers: int, someone_eligible: bool) -> str:
    """What happens to a lead whose offer lapsed: `reoffer` to the next rep, or `queue` it
    (the manager is told and the team's reps may claim it) after `max_reoffers` re-offers or
    when nobody else is eligible."""
    if reoffers_so_far >= max_reoffers or not someone_eligible:
        return "queue"
    return "reoffer"


async def escalate_due(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> list[Escalation]:
    """Escalate up to `limit` offers whose deadline is at or before `now`.

    Each lapsed offer becomes `escalated` through a conditional update (an acceptance that
    got there first wins). Its lead is re-offered by the rules to the next eligible rep other
    than the one who let it lapse, preferring reps who never had it; after
    `max_reoffers` re-offers, or with nobody eligible, it goes to the team's shared queue and
    the team's manager is notified.
    """
    lapsed = await repository.claim_lapsed_offers(session, now, limit)
    if not lapsed:
        return []
    await repository.lock_routing(session)
    async with _in_leads_traces(session, "router escalate", lapsed):
        return await _escalate(session, context, lapsed, now)


async def _escalate(
    session: AsyncSession, context: RouterContext, lapsed: Sequence[RowMapping], now: datetime
) -> list[Escalation]:
    escalations: list[Escalation] = []
    settings = context.settings
    snapshot = service.RosterSnapshot()
    batch_start = now
    for index, offer in enumerate(lapsed):
        # One microsecond apart, so round robin sees the batch's offers in order.
        now = batch_start + timedelta(microseconds=index)
        if not await repository.escalate_offer(session, offer["id"], now):
            continue
        await delivery_repository.cancel_pending_notifications(session, offer["id"])
        count_after_commit(session, context.metrics.sla_breaches.labels(deadline="accept"))
        count_after_commit(session, context.metrics.escalations.labels(reason=SLA_EXPIRED))
        paused_until = None
        if settings.pause_late_rep_seconds > 0:
            paused_until = now + timedelta(seconds=settings.pause_late_rep_seconds)
            await roster_repository.pause_person(session, offer["sdr_id"], paused_until)
        snapshot.released(offer["sdr_id"], paused_until)
        lead_id: str = offer["lead_id"]
        lead = await repository.find_lead(session, lead_id)
        assert lead is not None
        previous = frozenset(await repository.sdrs_who_had(session, lead_id))
        role = offer["role"]
        rep_id, routing = await service.decide(session, context, lead, now, role=role,
                                               exclude=previous, snapshot=snapshot)
        if rep_id is None:
            rep_id, routing = await service.decide(session, context, lead, now, role=role,
                                                   exclude=frozenset({offer["sdr_id"]}),
                                                   snapshot=snapshot)
        reoffers = await repository.reoffer_count(session, lead_id, role) - 1
        step = next_escalation(reoffers, settings.max_reoffers, rep_id is not None)
        to_assignment_id = new_id() if step == "reoffer" else None
        queued_team = offer["team_id"] if step == "queue" else None
        escalated = Escalation(
            lead_id=lead_id, from_assignment_id=offer["id"], from_sdr_id=offer["sdr_id"],
            to_assignment_id=to_assignment_id,
            to_sdr_id=rep_id if step == "reoffer" else None, queued_team_id=queued_team,
        )
        await context.outbox.add(session, AssignmentEscalated(
            producer=service.PRODUCER, lead_id=lead_id, occurred_at=now,
            data=AssignmentEscalatedData(
                from_assignment_id=escalated.from_assignment_id,
                from_sdr_id=escalated.from_sdr_id,
                to_assignment_id=escalated.to_assignment_id,
                to_sdr_id=escalated.to_sdr_id,
                reason=SLA_EXPIRED if step == "reoffer" else f"{SLA_EXPIRED}:queued",
            ),
        ))
        if step == "reoffer":
            assert rep_id is not None
            await offers.offer_lead(session, context, lead, rep_id, now=now, routing=routing,
                                     role=role, assignment_id=to_assignment_id)
            snapshot.assigned(rep_id, now)
        else:
            await _to_queue(session, context, lead, offer, now)
        await repository.insert_escalation(session, {
            "id": new_id(), "lead_id": lead_id,
            "from_assignment_id": escalated.from_assignment_id,
            "to_assignment_id": escalated.to_assignment_id,
            "from_sdr_id": escalated.from_sdr_id, "to_sdr_id": escalated.to_sdr_id,
            "reason": SLA_EXPIRED if step == "reoffer" else "queued", "escalated_at": now,
        })
        escalations.append(escalated)
    return escalations


@asynccontextmanager
async def _in_leads_traces(
    session: AsyncSession, name: str, assignments: Sequence[RowMapping]
) -> AsyncIterator[None]:
    """What the timer writes for these assignments' leads continues each lead's trace (the
    one its offer was made in) instead of starting a new one."""
    parents = await delivery_repository.offer_traceparents(
        session, [row["id"] for row in assignments])
    with tracing.continuing(name, {row["lead_id"]: parents.get(row["id"])
                                   for row in assignments}):
        yield


async def _to_queue(
    session: AsyncSession, context: RouterContext, lead: RowMapping, offer: RowMapping,
    now: datetime,
) -> None:
    """Nobody (else) took the lead in time: into the team's shared queue, manager told (at
    the team's next opening when it is closed now). Without a team, the lead is `stranded`
    until someone is eligible again."""
    team_id = offer["team_id"]
    if team_id is None:
        await repository.update_lead(session, lead["id"], {"status": "stranded",
                                                           "updated_at": now})
        return
    await repository.update_lead(session, lead["id"], {
        "status": "queued", "queue_team_id": team_id, "queued_at": now, "updated_at": now,
    })
    team = await roster_repository.find_team(session, team_id)
    if team is None or team["manager_id"] is None:
        return
    manager = await roster_repository.find_sdr(session, team["manager_id"])
    if manager is not None:
        # A team that is closed now hears of its queue when it opens, not in the night.
        opening = roster.team_hours(team).next_opening(now)
        await offers.notify_person(
            session, context, manager, lead,
            Offer(offer["id"], lead["id"], offer["sdr_id"], offer["attempt"], offer["deadline_at"]),
            kind="escalation", now=now, role=offer["role"], deliver_at=opening,
        )


async def send_reminders(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> int:
    """Remind reps of offers whose deadline is near."""
    due = await repository.claim_due_reminders(session, now, limit)
    async with _in_leads_traces(session, "router remind", due):
        for row in due:
            person = await roster_repository.find_sdr(session, row["sdr_id"])
            lead = await repository.find_lead(session, row["lead_id"])
            if person is None or lead is None:
                continue
            offer = Offer(row["id"], row["lead_id"], row["sdr_id"], row["attempt"],
                          row["deadline_at"])
            await offers.notify_person(session, context, person, lead, offer, kind="reminder",
                                       now=now, role=row["role"],
                                       why_you=(row["decision"] or {}).get("summary"))
    return len(due)


async def report_contact_breaches(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int = 100
) -> int:
    """Accepted leads nobody contacted in time: counted, and the team's manager told."""
    due = await repository.claim_contact_breaches(session, now, limit)
    async with _in_leads_traces(session, "router contact overdue", due):
        for row in due:
            await _report_contact_breach(session, context, row, now)
    return len(due)


async def _report_contact_breach(
    session: AsyncSession, context: RouterContext, row: RowMapping, now: datetime
) -> None:
    count_after_commit(session, context.metrics.sla_breaches.labels(deadline="contact"))
    if row["team_id"] is None:
        return
    team = await roster_repository.find_team(session, row["team_id"])
    if team is None or team["manager_id"] is None:
        return
    manager = await roster_repository.find_sdr(session, team["manager_id"])
    lead = await repository.find_lead(session, row["lead_id"])
    if manager is None or lead is None:
        return
    offer = Offer(row["id"], row["lead_id"], row["sdr_id"], row["attempt"],
                  row["contact_deadline_at"])
    await offers.notify_person(session, context, manager, lead, offer,
                                kind="contact_overdue", now=now, role=row["role"])


class EscalationTimer:
    """The `escalation-timer` background loop."""

    def __init__(
        self, db: Database, context: RouterContext, *, interval: float, batch_size: int,
        clock: TimerClock | None = None,
    ) -> None:
        """`clock` None: the routing context's clock."""
        self.db = db
        self.context = context
        self.interval = interval
        self.batch_size = batch_size
        self.clock = clock or InjectedClock(context.clock)

    async def run(self) -> None:
        async def tick() -> bool:
            if not await self.due():
                return False
            # After escalating, more offers may have fallen due while the batch ran.
            return len((await self.tick()).escalations) > 0

        await repeat(tick, interval=self.interval, name="escalation timer")

    async def due(self) -> bool:
        """Whether `tick` has anything to do now, read in one statement: an idle system pays
        that each interval, not the tick's five transactions. The timers stay in the database,
        so one written by another instance is seen at the next interval."""
        async with self.db.reading() as session:
            now = await self.clock.now(session)
            earliest, waiting = await repository.earliest_timer(session)
        return waiting or (earliest is not None and earliest <= now)

    async def tick(self) -> Tick:
        """Escalate every lapsed offer, then offer waiting leads, in batches."""
        done = Tick()
        while True:
            async with self.db.transaction() as session:
                escalations = await escalate_due(
                    session, self.context, await self.clock.now(session), limit=self.batch_size
                )
            done.escalations.extend(escalations)
            if len(escalations) < self.batch_size:
                break
        async with self.db.transaction() as session:
            now = await self.clock.now(session)
            reminders = await send_reminders(session, self.context, now, limit=self.batch_size)
            breaches = await report_contact_breaches(
                session, self.context, now, limit=self.batch_size
            )
        done = Tick(done.escalations, done.offers, reminders, breaches)
        while True:
            async with self.db.transaction() as session:
                offers = await service.route_waiting_leads(
                    session, self.context, await self.clock.now(session), limit=self.batch_size
                )
            done.offers.extend(offers)
            if len(offers) < self.batch_size:
                break
        while True:
            async with self.db.transaction() as session:
                handed = await retry_handovers(
                    session, self.context, await self.clock.now(session), limit=self.batch_size
                )
            done.offers.extend(handed)
            if len(handed) < self.batch_size:
                break
        return done
