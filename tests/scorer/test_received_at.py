"""Every `lead.scored` says when ingest received the lead: the `occurred_at` of its first
`lead.received`, kept on the score row through rescoring, stage moves, decay and replays, on
the one-by-one path and the batch path alike (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiokafka import TopicPartition

from services.scorer.context import ScorerContext
from services.scorer.decay import DecaySweep
from shared.clock import ManualClock
from shared.consumer import Handler
from shared.db import Database
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    LeadReceived,
    LeadUpdated,
    LeadUpdatedData,
)
from tests.scorer.conftest import PROFILE, TOPICS, Scorer
from tests.scorer.test_consumer import consumer_for, history_of, record


def received_earlier(scorer: Scorer, seconds: float) -> LeadReceived:
    """A `lead.received` that ingest published `seconds` before the scorer takes it."""
    event = scorer.received()
    return event.model_copy(update={"occurred_at": scorer.clock.now() - timedelta(seconds=seconds)})


async def received_times(scorer: Scorer) -> list[datetime | None]:
    return [event.data.received_at for event in await scorer.published("lead.scored")]


async def test_one_event_at_a_time_every_score_carries_the_first_reception(
    scorer: Scorer, context: ScorerContext, clock: ManualClock, db: Database
) -> None:
    received = received_earlier(scorer, 90)
    await scorer.apply(received, *(scorer.signal("content_download") for _ in range(3)))
    clock.advance(timedelta(minutes=5))
    # A second `lead.received` (another event id, later) does not move the reception.
    await scorer.apply(received_earlier(scorer, 0).model_copy(
        update={"data": received.data.model_copy(update={"lead": PROFILE.model_copy(
            update={"job_title": "CEO"})})}))
    await scorer.apply(LeadUpdated(
        producer="ingest", lead_id=scorer.lead_id, occurred_at=clock.now(),
        data=LeadUpdatedData(lead=PROFILE.model_copy(update={"employee_count": 5000}),
                             changed_fields=["employee_count"]),
    ))
    await scorer.apply(AssignmentAccepted(
        producer="router", lead_id=scorer.lead_id,
        data=AssignmentAcceptedData(assignment_id="a", sdr_id="s", accepted_at=clock.now(),
                                    within_sla=True),
    ))
    clock.advance(timedelta(days=90))
    assert await DecaySweep(db, context, interval=1, batch_size=10).tick() == 1

    published = await scorer.published("lead.scored")
    stages = [event.data.stage for event in published]
    assert "sal" in stages  # the stage move's own `lead.scored` is among them
    assert published[-1].occurred_at == clock.now()  # and the decay crossing's
    assert len(published) >= 6
    assert await received_times(scorer) == [received.occurred_at] * len(published)
    assert (await scorer.stored())["received_at"] == received.occurred_at


async def test_a_batch_carries_the_reception_and_a_redelivery_keeps_it(
    scorer: Scorer, db: Database, handlers: dict[str, Handler], context: ScorerContext,
    clock: ManualClock,
) -> None:
    history = history_of(scorer)
    reception = clock.now() - timedelta(seconds=42)
    history = [
        event.model_copy(update={"occurred_at": reception})
        if isinstance(event, LeadReceived) else event
        for event in history
    ]
    consumer = consumer_for(db, handlers, context, clock)
    records = {TopicPartition(TOPICS.leads, 0): [
        record(event, offset) for offset, event in enumerate(history)
    ]}
    await consumer.apply(records)
    clock.advance(60)
    await consumer.apply(records)
    # A later batch of signals only: the reception comes from the stored row.
    await consumer.apply({TopicPartition(TOPICS.leads, 0): [
        record(scorer.signal("demo_request", signal_id="demo"), 20),
    ]})

    published = await received_times(scorer)
    assert len(published) == 4
    assert published == [reception] * 4
    assert (await scorer.stored())["received_at"] == reception


async def test_a_lead_the_scorer_never_saw_received_says_nothing(scorer: Scorer) -> None:
    await scorer.apply(LeadUpdated(
        producer="ingest", lead_id=scorer.lead_id,
        data=LeadUpdatedData(lead=PROFILE, changed_fields=["company"]),
    ))

    assert await received_times(scorer) == [None]
    assert (await scorer.stored())["received_at"] is None
