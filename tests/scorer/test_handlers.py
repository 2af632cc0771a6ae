"""The scorer's handlers against a real, migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import func, select

from services.scorer.models import INBOX, signal
from shared.clock import ManualClock
from shared.consumer import EventConsumer, Handler
from shared.db import Database
from shared.events import (
    Envelope,
    LeadProfile,
    LeadScored,
    LeadUpdated,
    LeadUpdatedData,
    encode_event,
)
from tests.scorer.conftest import LEAD_ID, PROFILE, TOPICS, Scorer


def updated(**changes: Any) -> LeadUpdated:
    return LeadUpdated(
        producer="ingest", lead_id=LEAD_ID, correlation_id="request-2",
        data=LeadUpdatedData(
            lead=PROFILE.model_copy(update=changes), changed_fields=sorted(changes)
        ),
    )


def rule_ids(event_or_row: Any) -> list[str]:
    if isinstance(event_or_row, LeadScored):
        return [line.rule_id for line in event_or_row.data.breakdown]
    return [line["rule_id"] for line in event_or_row["breakdown"]]


async def test_received_lead_is_stored_with_its_score_and_published(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received())

    row = await scorer.stored()
    [event] = await scorer.published()
    assert (row["score"], row["fit"], row["engagement"]) == (20, 20, 0)
    assert (row["temperature"], row["stage"]) == ("cold", "lead")
    assert row["model_version"] == "default-2"
    assert rule_ids(row) == ["company-size-mid", "target-country"]
    assert LeadProfile.model_validate(row["profile"]) == PROFILE
    assert row["scored_at"] == row["updated_at"] == clock.now()
    assert row["next_check_at"] is None
    assert isinstance(event, LeadScored)
    assert (event.producer, event.lead_id, event.correlation_id) == ("scorer", LEAD_ID, "request-1")
    assert event.data.lead == PROFILE
    assert (event.data.score, event.data.temperature, event.data.stage) == (20, "cold", "lead")
    assert rule_ids(event) == rule_ids(row)


def record(event: Envelope, offset: int) -> ConsumerRecord:
    value = encode_event(event)
    return ConsumerRecord(
        topic=TOPICS.leads, partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=event.lead_id.encode(), value=value, checksum=None,
        serialized_key_size=len(event.lead_id), serialized_value_size=len(value), headers=[],
    )


async def test_a_redelivered_event_is_applied_once(
    db: Database, handlers: dict[str, Handler], clock: ManualClock, scorer: Scorer
) -> None:
    consumer = EventConsumer(
        name="scorer", db=db, inbox=INBOX, handlers=handlers, clock=clock,
        consumer=cast(AIOKafkaConsumer, object()),  # apply() never touches the Kafka client
    )
    records = {TopicPartition(TOPICS.leads, 0): [record(scorer.received(), offset=0),
                                                 record(scorer.signal("email_open"), offset=1)]}

    await consumer.apply(records)
    first = await scorer.stored()
    clock.advance(timedelta(minutes=5))
    await consumer.apply(records)

    assert (consumer.applied, consumer.duplicates, consumer.dead_lettered) == (2, 2, 0)
    assert await scorer.stored() == first
    assert len(await scorer.published()) == 2


async def test_an_update_that_changes_nothing_scored_publishes_nothing(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received())
    scored_at = clock.now()
    clock.advance(timedelta(minutes=5))

    await scorer.apply(updated(name="Ada Lovelace"))

    row = await scorer.stored()
    assert len(await scorer.published()) == 1
    assert row["profile"]["name"] == "Ada Lovelace"
    assert (row["scored_at"], row["updated_at"]) == (scored_at, clock.now())


async def test_an_update_that_changes_the_score_publishes_it_again(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received())
    clock.advance(timedelta(minutes=5))

    await scorer.apply(updated(employee_count=450, demo_requested=True))

    row = await scorer.stored()
    [_, changed, scored] = await scorer.published()
    assert (row["score"], row["fit"], row["engagement"], row["temperature"]) == (60, 30, 30, "hot")
    assert (row["stage"], row["buying_signal"]) == ("mql", True)
    assert (changed.type, changed.data.from_stage, changed.data.to_stage) == (
        "lead.stage_changed", "lead", "mql"
    )
    assert changed.data.reason == "buying_signal"
    assert (scored.data.score, scored.data.temperature, scored.data.stage) == (60, "hot", "mql")
    assert scored.data.buying_signal
    assert scored.correlation_id == "request-2"
    assert rule_ids(row) == rule_ids(scored) == [
        "company-size-large", "target-country", "demo-requested"
    ]


@pytest.mark.parametrize(
    ("changes", "score", "expected_rules"),
    [
        ({"company": None}, 10, ["company-size-mid", "target-country", "company-missing"]),
        ({"country": "US", "employee_count": 450}, 10, ["company-size-large",
                                                        "outside-territory"]),
    ],
    ids=["score-changes-temperature-stays", "only-the-breakdown-changes"],
)
async def test_any_change_of_what_counts_is_published(
    scorer: Scorer, changes: dict[str, Any], score: float, expected_rules: list[str]
) -> None:
    await scorer.apply(scorer.received())

    await scorer.apply(updated(**changes))

    [first, second] = await scorer.published()
    assert first.data.temperature == second.data.temperature == "cold"
    assert (first.data.score, second.data.score) == (20, score)
    assert rule_ids(second) == expected_rules


async def test_signals_count_once_each_and_explain_the_score(
    scorer: Scorer, clock: ManualClock
) -> None:
    await scorer.apply(scorer.received())
    opened = scorer.signal("email_open", signal_id="open-1")
    await scorer.apply(opened, scorer.signal("content_download", signal_id="dl-1"))
    await scorer.apply(scorer.signal("email_open", signal_id="open-1"))  # a replay, new envelope

    row = await scorer.stored()
    published = await scorer.published("lead.scored")
    assert (row["score"], row["engagement"], row["temperature"]) == (50, 30, "warm")
    lines = {line["rule_id"]: line for line in row["breakdown"]}
    assert lines["email-open"] == {
        "rule_id": "email-open", "points": 10.0, "raw_points": 10.0,
        "reason": "Opened our emails", "evidence": ["open-1"],
    }
    assert lines["content-download"]["evidence"] == ["dl-1"]
    assert [event.data.score for event in published] == [20, 30, 50]
    async with scorer.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(signal)) == 2


async def test_a_signal_before_the_lead_counts_when_the_lead_arrives(scorer: Scorer) -> None:
    await scorer.apply(scorer.signal("content_download"))
    assert await scorer.published() == []

    await scorer.apply(scorer.received())

    [event] = await scorer.published()
    assert event.data.engagement == 20
    assert "content-download" in rule_ids(event)


async def test_replaying_a_lead_s_whole_history_gives_the_same_score(
    scorer: Scorer, clock: ManualClock, migrated_url: str
) -> None:
    history = [scorer.received(), scorer.signal("content_download", at=clock.now()),
               updated(job_title="VP Sales"), scorer.signal("email_open", at=clock.now()),
               scorer.signal("page_view", at=clock.now(), url="https://acme.io/careers")]
    await scorer.apply(*history)
    first = await scorer.stored()

    replay = Scorer(scorer.db, scorer.handlers, clock,
                    lead_id="5c6f1e2a-0000-4000-8000-000000000002")
    await replay.apply(*(event.model_copy(update={"lead_id": replay.lead_id})
                         for event in history))
    again = await replay.stored()

    keys = ("score", "fit", "engagement", "temperature", "stage", "breakdown", "next_check_at")
    assert {key: first[key] for key in keys} == {key: again[key] for key in keys}
    assert first["score"] == 55
