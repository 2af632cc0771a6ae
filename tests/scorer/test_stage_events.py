"""The router's events move the lifecycle; rejections feed the report; erasure forgets the lead.

Against a real, migrated database (SQLite and PostgreSQL), with events built here: the scorer
never waits on the router.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update

from services.scorer import repository
from services.scorer.models import INBOX, OUTBOX, rejection, rejection_rule, signal
from shared.clock import ManualClock
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentDisqualified,
    AssignmentDisqualifiedData,
    AssignmentQualified,
    AssignmentQualifiedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Bant,
    Envelope,
    LeadErased,
    LeadErasedData,
    LeadNurture,
    LeadNurtureData,
)
from tests.scorer.conftest import LEAD_ID, PROFILE, Scorer

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def accepted() -> AssignmentAccepted:
    return AssignmentAccepted(
        producer="router", lead_id=LEAD_ID,
        data=AssignmentAcceptedData(assignment_id="a-1", sdr_id="s-1", accepted_at=AT,
                                    within_sla=True),
    )


def qualified() -> AssignmentQualified:
    return AssignmentQualified(
        producer="router", lead_id=LEAD_ID,
        data=AssignmentQualifiedData(assignment_id="a-1", sdr_id="s-1", qualified_at=AT,
                                     bant=Bant(budget="yes", authority="yes", need="yes",
                                               timing="Q3")),
    )


def rejected(reason_code: str = "no_budget") -> AssignmentRejected:
    return AssignmentRejected(
        producer="router", lead_id=LEAD_ID,
        data=AssignmentRejectedData(assignment_id="a-1", sdr_id="s-1", reason_code=reason_code,
                                    note="said Bob from Acme"),
    )


def disqualified(reason_code: str = "competitor") -> AssignmentDisqualified:
    return AssignmentDisqualified(
        producer="router", lead_id=LEAD_ID,
        data=AssignmentDisqualifiedData(assignment_id="a-2", sdr_id="s-2",
                                        reason_code=reason_code),
    )


async def history(scorer: Scorer) -> list[tuple[str, str, str | None, str]]:
    async with scorer.db.reading() as session:
        rows = await repository.stage_history(session, LEAD_ID)
    return [(row["from_stage"], row["to_stage"], row["reason"], row["cause"]) for row in rows]


def stage_events(events: list[Envelope]) -> list[tuple[str, str]]:
    return [
        (event.data.from_stage, event.data.to_stage)  # type: ignore[attr-defined]
        for event in events if event.type == "lead.stage_changed"  # type: ignore[attr-defined]
    ]


async def test_a_lead_walks_the_funnel_and_each_step_is_kept_and_published(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received(PROFILE.model_copy(update={"demo_requested": True})))
    clock.advance(60)
    await scorer.apply(accepted())
    clock.advance(60)
    await scorer.apply(qualified())

    row = await scorer.stored()
    published = await scorer.published()
    assert row["stage"] == "sql"
    assert row["stage_changed_at"] == clock.now()
    assert await history(scorer) == [
        ("lead", "mql", "buying_signal", "profile"),
        ("mql", "sal", None, "assignment.accepted"),
        ("sal", "sql", "qualified", "assignment.qualified"),
    ]
    assert stage_events(published) == [("lead", "mql"), ("mql", "sal"), ("sal", "sql")]
    scored = [event for event in published if event.type == "lead.scored"]
    assert [event.data.stage for event in scored] == ["mql", "sal", "sql"]
    assert scored[-1].data.temperature == "hot"
    async with scorer.db.reading() as session:
        [mql] = [item for item in await repository.stage_history(session, LEAD_ID)
                 if item["to_stage"] == "mql"]
    assert mql["rule_ids"] == ["company-size-mid", "target-country", "demo-requested"]


async def test_an_event_the_lifecycle_refuses_changes_nothing(scorer: Scorer) -> None:
    await scorer.apply(scorer.received())
    before = await scorer.published()

    await scorer.apply(qualified())  # a lead no SDR accepted cannot be sales qualified

    assert (await scorer.stored())["stage"] == "lead"
    assert await scorer.published() == before
    assert await history(scorer) == []


async def test_a_repeated_acceptance_is_no_second_move(scorer: Scorer) -> None:
    await scorer.apply(scorer.received(), accepted(), accepted())
    assert await history(scorer) == [("lead", "sal", None, "assignment.accepted")]


async def test_rejection_recycles_and_is_recorded_without_the_note(scorer: Scorer) -> None:
    profile = PROFILE.model_copy(update={"demo_requested": True, "source": "linkedin"})
    await scorer.apply(scorer.received(profile), accepted(), rejected())

    assert (await scorer.stored())["stage"] == "recycled"
    assert (await history(scorer))[-1] == ("sal", "recycled", "no_budget", "assignment.rejected")
    async with scorer.db.reading() as session:
        [kept] = (await session.execute(select(rejection))).mappings().all()
        rules = set((await session.scalars(select(rejection_rule.c.rule_id))).all())
    assert (kept["outcome"], kept["reason_code"], kept["lead_source"]) == (
        "rejected", "no_budget", "linkedin"
    )
    assert "Bob" not in str(dict(kept))
    assert rules == {"company-size-mid", "target-country", "demo-requested"}


async def test_a_recycled_lead_needs_fresh_activity_to_be_mql_again(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received(PROFILE.model_copy(update={"demo_requested": True})))
    await scorer.apply(accepted(), rejected())
    clock.advance(60)
    await scorer.apply(scorer.received(PROFILE.model_copy(update={"demo_requested": True,
                                                                  "name": "Ada"})))
    assert (await scorer.stored())["stage"] == "recycled"

    clock.advance(60)
    await scorer.apply(scorer.signal("content_download"))

    assert (await scorer.stored())["stage"] == "mql"
    assert (await history(scorer))[-1] == ("recycled", "mql", "buying_signal", "signal")


async def test_an_sdrs_disqualification_recycles_the_lead_as_the_router_sends_it(
    scorer: Scorer,
) -> None:
    # What the router publishes for a disqualification: the assignment's event, then nurture.
    await scorer.apply(scorer.received(), accepted(), disqualified(), LeadNurture(
        producer="router", lead_id=LEAD_ID,
        data=LeadNurtureData(reason="disqualified:competitor"),
    ))

    assert (await scorer.stored())["stage"] == "recycled"
    assert [step[1:] for step in await history(scorer)] == [
        ("sal", None, "assignment.accepted"),
        ("recycled", "competitor", "assignment.disqualified"),
    ]
    async with scorer.db.reading() as session:
        by_source = await repository.rejections_by_source(session, None)
    assert [dict(row) for row in by_source] == [
        {"lead_source": "unknown", "outcome": "disqualified", "reason_code": "competitor",
         "count": 1}
    ]


async def test_nurture_recycles_the_lead(scorer: Scorer) -> None:
    await scorer.apply(scorer.received(), LeadNurture(
        producer="router", lead_id=LEAD_ID, data=LeadNurtureData(reason="not_ready")
    ))
    assert (await scorer.stored())["stage"] == "recycled"
    assert [step[1:3] for step in await history(scorer)] == [("recycled", "not_ready")]


async def test_an_event_about_an_unknown_lead_is_ignored(scorer: Scorer) -> None:
    await scorer.apply(accepted())
    assert await scorer.published() == []


@pytest.mark.parametrize("already_scored", [True, False], ids=["scored", "never-scored"])
async def test_erasure_forgets_personal_data_and_signals_and_ignores_later_events(
    scorer: Scorer, clock: ManualClock, already_scored: bool
) -> None:
    if already_scored:
        await scorer.apply(scorer.received(), scorer.signal("email_open"))
    before = len(await scorer.published())

    await scorer.apply(LeadErased(producer="ingest", lead_id=LEAD_ID, correlation_id="gdpr-7",
                                  data=LeadErasedData()))
    clock.advance(timedelta(minutes=1))
    await scorer.apply(scorer.signal("demo_request"), scorer.received())

    row = await scorer.stored()
    assert row["erased_at"] is not None
    assert (row["profile"], row["breakdown"]) == ({}, [])
    assert "ada" not in str(dict(row))
    # The erasure is passed on, after the lead's scores, for the router; nothing follows it.
    published = await scorer.published()
    assert len(published) == before + 1
    erasure = published[-1]
    assert isinstance(erasure, LeadErased)
    assert (erasure.lead_id, erasure.producer, erasure.correlation_id) == (
        LEAD_ID, "scorer", "gdpr-7")
    async with scorer.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(signal)) == 0


async def test_erasure_deletes_the_leads_published_events_and_dead_letters(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received(), scorer.signal("email_open"))
    async with scorer.db.transaction() as session:
        await session.execute(update(OUTBOX.events).values(published_at=clock.now()))
        await session.execute(insert(INBOX.failed).values(
            consumer="scorer", topic="t", partition=0, offset=1, message_key=LEAD_ID,
            payload="ada@example.com", error="kept whole", failed_at=clock.now()))
    assert len(await scorer.published()) >= 2

    await scorer.apply(LeadErased(producer="ingest", lead_id=LEAD_ID, data=LeadErasedData()))

    assert [event.type for event in await scorer.published()] == ["lead.erased"]
    async with scorer.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(INBOX.failed)) == 0
