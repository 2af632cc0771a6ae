"""The scorer's batch consumer gives exactly what one event at a time gives, in far fewer
statements; a batch it cannot take whole falls back to the shared loop, which dead-letters."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import func, select

from services.scorer import repository
from services.scorer.consumer import ScorerConsumer
from services.scorer.context import ScorerContext
from services.scorer.models import INBOX
from shared.clock import ManualClock
from shared.consumer import Handler
from shared.db import Database
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    Envelope,
    LeadErased,
    LeadErasedData,
    LeadUpdated,
    LeadUpdatedData,
    encode_event,
)
from tests.scorer.conftest import PROFILE, TOPICS, Scorer
from tests.support import counted

BATCHED = "6e0a1f6e-1111-4000-8000-00000000000b"
ONE_BY_ONE = "6e0a1f6e-1111-4000-8000-00000000000a"


def record(event: Envelope | bytes, offset: int, key: str = "x") -> ConsumerRecord:
    value = event if isinstance(event, bytes) else encode_event(event)
    return ConsumerRecord(
        topic=TOPICS.leads, partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=key.encode(), value=value, checksum=None, serialized_key_size=1,
        serialized_value_size=len(value), headers=[],
    )


def consumer_for(db: Database, handlers: dict[str, Handler], context: ScorerContext,
                 clock: ManualClock) -> ScorerConsumer:
    return ScorerConsumer(
        context=context, name="scorer", db=db, inbox=INBOX, handlers=handlers, clock=clock,
        consumer=cast(AIOKafkaConsumer, object()),  # apply() never touches the Kafka client
    )


def history_of(scorer: Scorer) -> list[Envelope]:
    """Signals, a duplicate, profile changes and an acceptance mixed, as a lead lives them."""
    accepted = AssignmentAccepted(
        producer="router", lead_id=scorer.lead_id,
        data=AssignmentAcceptedData(assignment_id="a", sdr_id="s",
                                    accepted_at=scorer.clock.now(), within_sla=True),
    )
    updated = LeadUpdated(
        producer="ingest", lead_id=scorer.lead_id,
        data=LeadUpdatedData(lead=PROFILE.model_copy(update={"job_title": "CEO"}),
                             changed_fields=["job_title"]),
    )
    return [
        scorer.signal("email_open", signal_id="early"),  # before the lead: kept for later
        scorer.received(),
        scorer.signal("content_download", signal_id="d1"),
        scorer.signal("content_download", signal_id="d1"),  # the same signal, resent
        scorer.signal("email_click", signal_id="c1"),
        accepted,
        scorer.signal("pricing_page_view", signal_id="p1"),
        updated,
        scorer.signal("page_view", signal_id="j1", url="https://acme.io/careers"),
    ]


def comparable(row: Any) -> dict[str, Any]:
    return {key: value for key, value in dict(row).items() if key != "lead_id"}


def published_data(events: list[Any], lead_id: str) -> list[tuple[str, Any]]:
    """What was published about the lead, but the ids of the events that caused it."""
    return [(event.type, event.data.model_dump(exclude={"cause_event_id"}))
            for event in events if event.lead_id == lead_id]


async def test_a_batch_gives_what_one_event_at_a_time_gives(
    db: Database, handlers: dict[str, Handler], context: ScorerContext, clock: ManualClock
) -> None:
    one_by_one = Scorer(db, handlers, clock, lead_id=ONE_BY_ONE)
    batched = Scorer(db, handlers, clock, lead_id=BATCHED)
    await one_by_one.apply(*history_of(one_by_one))
    consumer = consumer_for(db, handlers, context, clock)

    records = [record(event, offset) for offset, event in enumerate(history_of(batched))]
    await consumer.apply({TopicPartition(TOPICS.leads, 0): records})

    assert (consumer.applied, consumer.dead_lettered) == (9, 0)
    assert comparable(await batched.stored()) == comparable(await one_by_one.stored())
    everything = await batched.published()
    alone, together = published_data(everything, ONE_BY_ONE), published_data(everything, BATCHED)
    # One at a time: received (30: the early open counts), a download (50: MQL), the resent
    # download (no change), a click, the acceptance (SAL), a signal no rule counts (no change),
    # the new job title; the careers page moves only the engagement points: stored, not
    # published.
    assert [step for step, _ in alone] == [
        "lead.scored", "lead.stage_changed", "lead.scored", "lead.scored",
        "lead.stage_changed", "lead.scored", "lead.scored",
    ]
    # In one batch the same transitions, at the same events; one `lead.scored` for where the
    # signals before the acceptance led, the acceptance's own, one for where the rest led.
    assert [step for step, _ in together] == [
        "lead.stage_changed", "lead.scored", "lead.stage_changed", "lead.scored", "lead.scored",
    ]
    assert [item for item in together if item[0] == "lead.stage_changed"] == [
        item for item in alone if item[0] == "lead.stage_changed"
    ]
    assert [together[1], together[3]] == [alone[3], alone[5]]
    # The last batch holds the job title too: published, with the careers page counted.
    assert together[4][1]["score"] == alone[6][1]["score"] - 10
    assert together[4][1] == {**alone[6][1], "score": together[4][1]["score"],
                              "engagement": together[4][1]["engagement"],
                              "breakdown": together[4][1]["breakdown"]}
    async with db.reading() as session:
        assert [row["to_stage"] for row in await repository.stage_history(session, BATCHED)] == [
            "mql", "sal"
        ]


async def test_a_redelivered_batch_changes_nothing(
    scorer: Scorer, db: Database, handlers: dict[str, Handler], context: ScorerContext,
    clock: ManualClock,
) -> None:
    consumer = consumer_for(db, handlers, context, clock)
    records = {TopicPartition(TOPICS.leads, 0): [
        record(event, offset) for offset, event in enumerate(history_of(scorer))
    ]}
    await consumer.apply(records)
    first, published = await scorer.stored(), await scorer.published()

    clock.advance(60)
    await consumer.apply(records)

    assert (consumer.applied, consumer.duplicates) == (9, 9)
    assert await scorer.stored() == first
    assert await scorer.published() == published


async def test_a_batch_with_a_broken_message_falls_back_and_dead_letters_it(
    scorer: Scorer, db: Database, handlers: dict[str, Handler], context: ScorerContext,
    clock: ManualClock,
) -> None:
    consumer = consumer_for(db, handlers, context, clock)
    erased_elsewhere = LeadErased(producer="ingest", lead_id="someone-else",
                                  data=LeadErasedData())
    records = [
        record(scorer.received(), 0),
        record(b'{"type": "signal.recorded", "lead_id": "x"}', 1),
        record(scorer.signal("content_download"), 2),
        record(erased_elsewhere, 3),
    ]

    await consumer.apply({TopicPartition(TOPICS.leads, 0): records})

    assert (consumer.applied, consumer.dead_lettered) == (3, 1)
    assert (await scorer.stored())["engagement"] == 20
    async with db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(INBOX.failed)) == 1


async def test_a_fast_path_rolled_back_counts_nothing_in_the_metrics(
    scorer: Scorer, db: Database, handlers: dict[str, Handler], context: ScorerContext,
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = consumer_for(db, handlers, context, clock)
    add = context.outbox.add
    calls = 0

    async def fail_once(session: Any, *events: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the fast path fails as it publishes")
        await add(session, *events)

    monkeypatch.setattr(context.outbox, "add", fail_once)
    records = [record(scorer.received(), 0), record(scorer.signal("demo_request"), 1)]

    await consumer.apply({TopicPartition(TOPICS.leads, 0): records})

    assert calls > 1 and consumer.applied == 2
    published = await scorer.published()
    assert counted(context.metrics.leads_scored) == len(
        [event for event in published if event.type == "lead.scored"])
    assert counted(context.metrics.stage_changes) == len(
        [event for event in published if event.type == "lead.stage_changed"]) > 0
