"""Routing by the rules and the life of an assignment, against a real database, with a manual
clock: exclusions, stored decisions, account owners, reject, contact, qualify, disqualify, the
escalation chain and the shared queue, erasure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from services.router import assignment_actions, roster, service
from services.router.escalation import EscalationTimer, escalate_due
from services.router.models import INBOX, OUTBOX, account_owner, lead, notification, sdr
from services.router.schemas import PersonFields
from shared.events import Bant, LeadErased, LeadErasedData
from shared.problems import ProblemError
from tests.router.conftest import Router, scored, types_of

HOT_ACCEPT = timedelta(minutes=2)


async def offer_of(router: Router, lead_id: str) -> dict[str, Any]:
    rows = await router.assignments(lead_id)
    return rows[-1]


async def escalate(router: Router) -> None:
    async with router.db.transaction() as session:
        await escalate_due(session, router.context, router.clock.now())


async def notifications(router: Router) -> list[dict[str, Any]]:
    return await router.rows(notification)


async def test_rules_pick_the_pool_and_every_exclusion_is_explained(router: Router) -> None:
    await router.add_team("France")
    await router.add_team("Everyone else")
    away = await router.add_person("Away", teams=["France"], presence="away")
    german = await router.add_person("Hans", teams=["France"], languages=["de"])
    full = await router.add_person("Full", teams=["France"], capacity=0)
    ooo = await router.add_person("Ooo", teams=["France"], out_of_office=[{
        "start": (router.clock.now() - timedelta(days=1)).isoformat(),
        "end": (router.clock.now() + timedelta(days=1)).isoformat()}])
    night = await router.add_person("Night", teams=["France"], timezone="Asia/Tokyo",
                                    working_hours={"mon": ["09:00-17:00"]})
    other = await router.add_person("Other", teams=["Everyone else"])
    marie = await router.add_person("Marie", teams=["France"], languages=["fr", "en"],
                                    territories=["FR"])
    version = await router.set_rules(
        {"id": "fr", "when": {"country": "FR"}, "pool": "France", "strategy": "least_loaded",
         "fallback_pool": "Everyone else"},
        {"id": "rest", "pool": "Everyone else"},
    )
    await router.consume(scored("lead-fr", clock=router.clock, country="FR", language="fr"))
    offer = await offer_of(router, "lead-fr")
    assert offer["sdr_id"] == marie
    assert (offer["rule_id"], offer["rules_version"]) == ("fr", version)
    [pool] = offer["decision"]["pools"]
    assert pool["pool"] == "France"
    assert pool["excluded"] == {
        away: ["presence_away"], german: ["language"], full: ["at_capacity"],
        ooo: ["out_of_office"], night: ["out_of_hours"],
    }
    assert pool["scores"] == {marie: 0.0}
    assert pool["strategy"] == "least_loaded"
    event = (await router.events())[-1]
    assert event["data"]["rule_id"] == "fr"
    assert event["data"]["rules_version"] == version

    # Marie is now busy with capacity 1: the next French lead falls back to the other pool.
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
    async with router.db.transaction() as session:
        await roster.update_person(session, router.clock, marie, PersonFields(capacity=1),
                                   router.context.channels)
    await router.consume(scored("lead-fr-2", clock=router.clock, country="FR", language="fr"))
    second = await offer_of(router, "lead-fr-2")
    assert second["sdr_id"] == other
    assert [pool["pool"] for pool in second["decision"]["pools"]] == ["France", "Everyone else"]
    assert second["decision"]["pools"][0]["excluded"][marie] == ["at_capacity"]


async def test_nobody_eligible_keeps_the_lead_waiting_until_someone_is(router: Router) -> None:
    await router.add_team("Paris")
    rep = await router.add_person("Early", teams=["Paris"], timezone="Europe/Paris",
                                  working_hours={"mon": ["11:00-18:00"]})
    await router.set_rules({"id": "all", "pool": "Paris"})
    await router.consume(scored("lead-1", clock=router.clock))  # 10:00 in Paris
    assert await router.assignments("lead-1") == []
    [waiting] = await router.rows(lead)
    assert waiting["status"] == "waiting"
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    router.clock.advance(timedelta(minutes=59))
    assert (await timer.tick()).offers == []
    router.clock.advance(timedelta(minutes=1))
    [offer] = (await timer.tick()).offers
    assert offer.sdr_id == rep


async def test_follow_the_sun_tries_a_pool_working_now(router: Router) -> None:
    await router.add_team("Sydney")
    await router.add_team("London")
    await router.add_person("Sleeping", teams=["Sydney"], timezone="Australia/Sydney",
                            working_hours={"mon": ["09:00-17:00"]})
    awake = await router.add_person("Awake", teams=["London"], timezone="Europe/London",
                                    working_hours={"mon": ["08:00-18:00"]})
    await router.set_rules({"id": "apac", "pool": "Sydney", "outside_hours": "follow_the_sun",
                            "follow_the_sun": ["London"]})
    await router.consume(scored("lead-1", clock=router.clock))
    offer = await offer_of(router, "lead-1")
    assert offer["sdr_id"] == awake
    assert [pool["pool"] for pool in offer["decision"]["pools"]] == ["Sydney", "London"]


async def test_account_owner_is_sticky_and_falls_back_to_the_pool(router: Router) -> None:
    await router.add_team("Named")
    ada = await router.add_person("Ada", teams=["Named"])
    router.clock.advance(1)
    bob = await router.add_person("Bob", teams=["Named"])
    await router.set_rules({"id": "named", "pool": "Named", "strategy": "account_owner"})
    await router.consume(scored("lead-1", clock=router.clock, account_key="acme.example"))
    first = await offer_of(router, "lead-1")
    assert first["sdr_id"] == ada
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, first["id"])
    [owner] = await router.rows(account_owner)
    assert (owner["account_key"], owner["person_id"]) == ("acme.example", ada)

    for number in range(2, 5):
        router.clock.advance(1)
        await router.consume(scored(f"lead-{number}", clock=router.clock,
                                    account_key="acme.example"))
        offer = await offer_of(router, f"lead-{number}")
        assert offer["sdr_id"] == ada, number
        assert offer["decision"]["pools"][0]["tie_break"] == "account owner"
    await router.consume(scored("other-account", clock=router.clock, account_key="globex.example"))
    assert (await offer_of(router, "other-account"))["sdr_id"] == bob

    async with router.db.transaction() as session:
        await roster_presence(session, router, ada, "offline")
    await router.consume(scored("lead-5", clock=router.clock, account_key="acme.example"))
    fallback = await offer_of(router, "lead-5")
    assert fallback["sdr_id"] == bob
    assert "not eligible" in fallback["decision"]["pools"][0]["note"]


async def roster_presence(session: Any, router: Router, person_id: str, presence: str) -> None:
    await roster.update_person(session, router.clock, person_id,
                               PersonFields.model_validate({"presence": presence}),
                               router.context.channels)


async def test_a_rejected_lead_is_offered_to_the_next_rep_at_once(router: Router) -> None:
    ada = await router.add_sdr("Ada")
    router.clock.advance(1)
    bob = await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock))
    first = await offer_of(router, "lead-1")
    assert first["sdr_id"] == ada
    router.clock.advance(10)
    async with router.db.transaction() as session:
        _, next_offer = await assignment_actions.reject(
            session, router.context, first["id"], "wrong_territory", "not my patch")
    assert next_offer is not None and next_offer.sdr_id == bob
    closed, second = await router.assignments("lead-1")
    assert (closed["status"], closed["reason_code"], closed["note"]) == (
        "rejected", "wrong_territory", "not my patch")
    assert second["status"] == "offered"
    assert second["offered_at"] == router.clock.now()
    assert second["decision"]["pools"][0]["excluded"] == {ada: ["already_had_lead"]}
    assert types_of(await router.events()) == [
        "assignment.offered", "assignment.rejected", "assignment.offered"]
    assert (await router.events())[1]["data"]["reason_code"] == "wrong_territory"
    with pytest.raises(ProblemError) as again:
        async with router.db.transaction() as session:
            await assignment_actions.reject(session, router.context, first["id"], "other", None)
    assert again.value.status == 409


async def test_accept_contact_qualify_hands_the_lead_to_an_ae(router: Router) -> None:
    await router.add_team("AE")
    ada = await router.add_sdr("Ada")
    closer = await router.add_person("Closer", role="ae", teams=["AE"],
                                     webhook_url="http://127.0.0.1:9/closer")
    await router.set_rules({"id": "all", "handoff_pool": "AE"})
    await router.consume(scored("lead-1", clock=router.clock))
    offer = await offer_of(router, "lead-1")
    router.clock.advance(30)
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
    accepted = await offer_of(router, "lead-1")
    assert accepted["contact_deadline_at"] == router.clock.now() + timedelta(minutes=5)
    router.clock.advance(60)
    async with router.db.transaction() as session:
        await assignment_actions.mark_contacted(session, router.context, offer["id"])
    bant = Bant(budget="50k", authority="VP Sales", need="routing", timing="Q2")
    router.clock.advance(600)
    async with router.db.transaction() as session:
        _, handoff = await assignment_actions.qualify(session, router.context, offer["id"], bant)
    assert handoff is not None and handoff.sdr_id == closer
    sdr_row, ae_row = await router.assignments("lead-1")
    assert (sdr_row["sdr_id"], sdr_row["status"], sdr_row["bant"]["budget"]) == (
        ada, "qualified", "50k")
    assert (ae_row["role"], ae_row["status"]) == ("ae", "offered")
    assert ae_row["deadline_at"] == router.clock.now() + timedelta(hours=1)
    events = await router.events()
    assert types_of(events) == [
        "assignment.offered", "assignment.accepted", "assignment.contacted",
        "assignment.qualified", "assignment.offered"]
    assert events[2]["data"]["within_sla"] is True
    assert events[3]["data"]["bant"]["authority"] == "VP Sales"
    assert events[4]["data"]["role"] == "ae"
    ae_notice = [row for row in await notifications(router) if row["sdr_id"] == closer]
    assert ae_notice[0]["payload"]["role"] == "ae"


async def test_a_disqualified_lead_goes_back_to_nurturing(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    offer = await offer_of(router, "lead-1")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
        await assignment_actions.disqualify(session, router.context, offer["id"], "no_budget", None)
    [closed] = await router.assignments("lead-1")
    assert (closed["status"], closed["reason_code"]) == ("disqualified", "no_budget")
    [recycled] = await router.rows(lead)
    assert recycled["status"] == "disqualified"
    events = await router.events()
    assert types_of(events)[-2:] == ["assignment.disqualified", "lead.nurture"]
    assert events[-1]["data"]["reason"] == "disqualified:no_budget"
    # A new score does not route it again by itself.
    await router.consume(scored("lead-1", clock=router.clock))
    assert len(await router.assignments("lead-1")) == 1


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one by one"])
async def test_a_disqualified_lead_the_scorer_makes_mql_again_is_routed_again(
    router: Router, one_by_one: bool
) -> None:
    await router.add_sdr("Ada")
    consumer = router.consumer(one_by_one=one_by_one)
    await router.consume(scored("lead-1", clock=router.clock, stage="mql"), consumer=consumer)
    offer = await offer_of(router, "lead-1")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
        await assignment_actions.disqualify(session, router.context, offer["id"], "no_need", None)
    # A score the scorer sent before it recycled the lead, then the recycling, then engagement
    # while recycled: the lead stays with marketing.
    for stage in ("mql", "recycled", "recycled"):
        router.clock.advance(60)
        await router.consume(scored("lead-1", clock=router.clock, stage=stage),
                             consumer=consumer)
    assert len(await router.assignments("lead-1")) == 1
    [held] = await router.rows(lead)
    assert held["status"] == "disqualified"
    # Months later it asks for a demo: the scorer makes it MQL again, and an SDR gets it.
    router.clock.advance(90 * 24 * 3600)
    await router.consume(scored("lead-1", clock=router.clock, stage="mql"), consumer=consumer)
    first, second = await router.assignments("lead-1")
    assert (first["status"], second["status"]) == ("disqualified", "offered")
    [routed] = await router.rows(lead)
    assert routed["status"] == "routed"


async def test_contact_without_acceptance_is_refused(router: Router) -> None:
    await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    offer = await offer_of(router, "lead-1")
    with pytest.raises(ProblemError) as refused:
        async with router.db.transaction() as session:
            await assignment_actions.mark_contacted(session, router.context, offer["id"])
    assert refused.value.status == 409
    assert refused.value.extensions["assignment_status"] == "offered"


async def test_the_escalation_chain_with_a_manual_clock(router: Router) -> None:
    """Reminder at half time; at the deadline re-offer (never the same rep) and pause the late
    rep; after `max_reoffers` re-offers, the team's queue and the manager; first claim wins."""
    settings = router.settings.model_copy(update={
        "sla_reminder_fraction": 0.5, "max_reoffers": 2, "pause_late_rep_seconds": 3600})
    context = service.RouterContext.build(settings, router.context.outbox, router.clock)
    router = Router(router.db, router.clock, settings, context)
    timer = EscalationTimer(router.db, context, interval=1, batch_size=10)
    await router.add_person("Boss", role="manager", webhook_url="http://127.0.0.1:9/boss")
    await router.add_team("Inside", manager_email="boss@seller.example")
    reps = []
    for name in ("Ann", "Ben", "Cat"):
        router.clock.advance(1)
        reps.append(await router.add_person(name, teams=["Inside"],
                                            webhook_url=f"http://127.0.0.1:9/{name}"))
    await router.set_rules({"id": "all", "pool": "Inside"})
    await router.consume(scored("lead-1", clock=router.clock))
    start = router.clock.now()

    router.clock.set(start + HOT_ACCEPT / 2 - timedelta(seconds=1))
    assert (await timer.tick()).reminders == 0
    router.clock.set(start + HOT_ACCEPT / 2)
    assert (await timer.tick()).reminders == 1
    kinds = [(row["sdr_id"], row["kind"]) for row in await notifications(router)]
    assert kinds == [(reps[0], "offer"), (reps[0], "reminder")]

    router.clock.set(start + HOT_ACCEPT - timedelta(microseconds=1))
    assert (await timer.tick()).escalations == []
    owners = []
    for hop in range(1, 4):
        router.clock.set(start + HOT_ACCEPT * hop)
        [escalated] = (await timer.tick()).escalations
        owners.append(escalated.from_sdr_id)
        if hop < 3:
            assert escalated.to_sdr_id == reps[hop]
        else:
            assert escalated.to_sdr_id is None and escalated.queued_team_id is not None
    assert owners == reps
    paused = {row["id"]: row["paused_until"] for row in await router.rows(sdr)}
    assert paused[reps[0]] == start + HOT_ACCEPT + timedelta(hours=1)
    [queued] = await router.rows(lead)
    assert queued["status"] == "queued"
    manager_notes = [row for row in await notifications(router) if row["kind"] == "escalation"]
    assert len(manager_notes) == 1
    assert manager_notes[0]["url"] == "http://127.0.0.1:9/boss"

    async with router.db.transaction() as session:
        claimed = await assignment_actions.claim_from_queue(
            session, context, "lead-1", reps[1], frozenset({queued["queue_team_id"]}))
    assert (claimed["sdr_id"], claimed["status"]) == (reps[1], "accepted")
    with pytest.raises(ProblemError) as late:
        async with router.db.transaction() as session:
            await assignment_actions.claim_from_queue(
                session, context, "lead-1", reps[2], frozenset({queued["queue_team_id"]}))
    assert (late.value.status, late.value.detail) == (409, "Already claimed by Ben.")
    assert late.value.extensions["claimed_by"] == reps[1]
    with pytest.raises(ProblemError) as elsewhere:
        async with router.db.transaction() as session:
            await assignment_actions.claim_from_queue(
                session, context, "lead-1", reps[2], frozenset({"another-team"}))
    assert elsewhere.value.status == 404
    statuses = [row["status"] for row in await router.assignments("lead-1")]
    assert statuses == ["escalated", "escalated", "escalated", "accepted"]


async def test_a_missed_contact_deadline_is_reported_to_the_manager(router: Router) -> None:
    timer = EscalationTimer(router.db, router.context, interval=1, batch_size=10)
    await router.add_person("Boss", role="manager", webhook_url="http://127.0.0.1:9/boss")
    await router.add_team("Inside", manager_email="boss@seller.example")
    await router.add_person("Ann", teams=["Inside"])
    await router.set_rules({"id": "all", "pool": "Inside"})
    await router.consume(scored("lead-1", clock=router.clock))
    offer = await offer_of(router, "lead-1")
    async with router.db.transaction() as session:
        await assignment_actions.accept_assignment(session, router.context, offer["id"])
    router.clock.advance(timedelta(minutes=5) - timedelta(seconds=1))
    assert (await timer.tick()).contact_breaches == 0
    router.clock.advance(timedelta(seconds=1))
    assert (await timer.tick()).contact_breaches == 1
    assert (await timer.tick()).contact_breaches == 0
    [note] = [row for row in await notifications(router) if row["kind"] == "contact_overdue"]
    assert note["url"] == "http://127.0.0.1:9/boss"


async def test_erasure_removes_the_leads_personal_data(router: Router) -> None:
    await router.add_sdr("Ada")
    router.clock.advance(1)
    await router.add_sdr("Bob")
    await router.consume(scored("lead-1", clock=router.clock, email="ada@buyer.example"))
    async with router.db.transaction() as session:
        await session.execute(update(OUTBOX.events).values(published_at=router.clock.now()))
        await session.execute(insert(INBOX.failed).values(
            consumer="router", topic="t", partition=0, offset=1, message_key="lead-1",
            payload="ada@buyer.example", error="kept whole", failed_at=router.clock.now()))
    await router.consume(LeadErased(producer="ingest", lead_id="lead-1",
                                    data=LeadErasedData()))
    assert await router.rows(OUTBOX.events) == []
    assert await router.rows(INBOX.failed) == []
    [erased] = await router.rows(lead)
    assert erased["profile"] == {}
    [offer] = await router.assignments("lead-1")
    assert offer["lead_snapshot"] == {}
    assert offer["status"] == "erased" and offer["closed_at"] is not None
    [queued] = await notifications(router)
    assert queued["payload"] == {}
    assert queued["status"] == "cancelled"
    # Its offer is closed for good: its deadline moves nothing, a reject offers it to nobody.
    router.clock.advance(HOT_ACCEPT)
    await escalate(router)
    with pytest.raises(ProblemError) as refused:
        async with router.db.transaction() as session:
            await assignment_actions.reject(session, router.context, offer["id"], "other", None)
    assert refused.value.status == 409
    assert [row["status"] for row in await router.assignments("lead-1")] == ["erased"]
    assert len(await notifications(router)) == 1
    # A late score of the lead routes nothing either, and is not kept.
    await router.consume(scored("lead-1", clock=router.clock, email="ada@buyer.example"))
    assert [row["status"] for row in await router.assignments("lead-1")] == ["erased"]
    assert [row["profile"] for row in await router.rows(lead)] == [{}]


async def test_the_accept_clock_holds_until_the_reps_next_opening(router: Router) -> None:
    await router.add_person("Ann", timezone="Europe/Paris",
                            working_hours={"mon": ["09:00-10:01"], "tue": ["09:00-17:00"]})
    await router.consume(scored("lead-1", clock=router.clock))  # Monday 10:00 in Paris
    offer = await offer_of(router, "lead-1")
    tuesday_0901_paris = router.clock.now() + timedelta(days=1, minutes=-59)
    assert offer["deadline_at"] == tuesday_0901_paris
    router.clock.advance(HOT_ACCEPT)
    await escalate(router)
    assert (await offer_of(router, "lead-1"))["status"] == "offered"


async def test_what_the_timer_writes_for_a_lead_stays_in_the_lead_s_trace(router: Router) -> None:
    """The reminder, the re-offer, its notification and the escalation event continue the trace
    the lead's offer was made in (its consumed score's `traceparent`), not a new one each."""
    settings = router.settings.model_copy(update={"sla_reminder_fraction": 0.5,
                                                  "max_reoffers": 1})
    context = service.RouterContext.build(settings, router.context.outbox, router.clock)
    router = Router(router.db, router.clock, settings, context)
    timer = EscalationTimer(router.db, context, interval=1, batch_size=10)
    for name in ("Ann", "Ben"):
        router.clock.advance(1)
        await router.add_sdr(name)
    lead_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await router.consume(scored("lead-1", clock=router.clock),
                         headers=[("traceparent", lead_trace.encode())])
    start = router.clock.now()
    router.clock.set(start + HOT_ACCEPT / 2)
    assert (await timer.tick()).reminders == 1
    router.clock.set(start + HOT_ACCEPT)
    assert len((await timer.tick()).escalations) == 1
    notices = sorted(await notifications(router), key=lambda row: row["created_at"])
    assert [row["kind"] for row in notices] == ["offer", "reminder", "offer"]
    assert {row["traceparent"] for row in notices} == {lead_trace}
    async with router.db.reading() as session:
        rows = (await session.execute(select(OUTBOX.events.c.event_type,
                                             OUTBOX.events.c.traceparent))).all()
    assert ("assignment.escalated", lead_trace) in rows
    assert [traceparent for kind, traceparent in rows if kind == "assignment.offered"] == [
        lead_trace, lead_trace]
