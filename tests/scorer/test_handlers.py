"""The scorer's handlers against a real, migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping

from services.scorer import repository
from services.scorer.handlers import ScorerContext, handler_table
from services.scorer.models import INBOX, OUTBOX
from services.scorer.scoring_model import load_scoring_model
from shared.clock import ManualClock
from shared.consumer import EventConsumer, Handler
from shared.db import Database
from shared.events import (
    Envelope,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    LeadScored,
    LeadUpdated,
    LeadUpdatedData,
    Topics,
    decode_event,
    encode_event,
)
from shared.outbox import Outbox
from tests.conftest import migrate

TOPICS = Topics("test")
LEAD_ID = "4b4a7a3e-2b0c-4f39-9d8e-0d6b1f7d2c11"
PROFILE = LeadProfile(
    email="ada@acme.io", company="Acme", country="FR", employee_count=120, account_key="acme.io"
)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    migrate("scorer", database_url)
    return database_url


@pytest.fixture
async def db(migrated_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def handlers(clock: ManualClock) -> dict[str, Handler]:
    outbox = Outbox(OUTBOX, topic=TOPICS.scores, shards=4, clock=clock)
    context = ScorerContext(outbox=outbox, clock=clock, model=load_scoring_model())
    return handler_table(context)


def received(profile: LeadProfile = PROFILE) -> LeadReceived:
    return LeadReceived(
        producer="ingest", lead_id=LEAD_ID, correlation_id="request-1",
        data=LeadReceivedData(lead=profile),
    )


def updated(**changes: Any) -> LeadUpdated:
    return LeadUpdated(
        producer="ingest", lead_id=LEAD_ID, correlation_id="request-2",
        data=LeadUpdatedData(
            lead=PROFILE.model_copy(update=changes), changed_fields=sorted(changes)
        ),
    )


async def apply(
    db: Database, handlers: dict[str, Handler], event: LeadReceived | LeadUpdated
) -> None:
    async with db.transaction() as session:
        await handlers[event.type](session, event)


async def stored_score(db: Database) -> RowMapping:
    async with db.reading() as session:
        row = await repository.find_score(session, LEAD_ID)
    assert row is not None
    return row


async def published(db: Database) -> list[tuple[RowMapping, LeadScored]]:
    async with db.reading() as session:
        rows = (
            await session.execute(select(OUTBOX.events).order_by(OUTBOX.events.c.id))
        ).mappings().all()
    decoded = []
    for row in rows:
        event = decode_event(row["payload"].encode())
        assert isinstance(event, LeadScored)
        decoded.append((row, event))
    return decoded


async def test_received_lead_is_stored_with_its_score_and_published(
    db: Database, handlers: dict[str, Handler], clock: ManualClock
) -> None:
    await apply(db, handlers, received())

    row = await stored_score(db)
    [(outbox_row, event)] = await published(db)
    assert (row["score"], row["fit"], row["engagement"]) == (20, 20, 0)
    assert row["temperature"] == "cold"
    assert row["model_version"] == "default-1"
    assert [line["rule_id"] for line in row["breakdown"]] == ["company-size-mid", "target-country"]
    assert LeadProfile.model_validate(row["profile"]) == PROFILE
    assert row["scored_at"] == row["updated_at"] == clock.now()
    assert (outbox_row["topic"], outbox_row["message_key"]) == (TOPICS.scores, LEAD_ID)
    assert outbox_row["event_type"] == "lead.scored"
    assert (event.producer, event.lead_id, event.correlation_id) == ("scorer", LEAD_ID, "request-1")
    assert event.data.lead == PROFILE
    assert (event.data.score, event.data.temperature, event.data.model_version) == (
        20, "cold", "default-1"
    )
    assert [line.rule_id for line in event.data.breakdown] == row_rule_ids(row)


def row_rule_ids(row: RowMapping) -> list[str]:
    return [line["rule_id"] for line in row["breakdown"]]


def record(event: Envelope, offset: int) -> ConsumerRecord:
    value = encode_event(event)
    return ConsumerRecord(
        topic=TOPICS.leads, partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=event.lead_id.encode(), value=value, checksum=None,
        serialized_key_size=len(event.lead_id), serialized_value_size=len(value), headers=[],
    )


async def test_a_redelivered_event_is_applied_once(
    db: Database, handlers: dict[str, Handler], clock: ManualClock
) -> None:
    consumer = EventConsumer(
        name="scorer", db=db, inbox=INBOX, handlers=handlers, clock=clock,
        consumer=cast(AIOKafkaConsumer, object()),  # apply() never touches the Kafka client
    )
    records = {TopicPartition(TOPICS.leads, 0): [record(received(), offset=0)]}

    await consumer.apply(records)
    first = await stored_score(db)
    clock.advance(timedelta(minutes=5))
    await consumer.apply(records)

    assert (consumer.applied, consumer.duplicates, consumer.dead_lettered) == (1, 1, 0)
    assert await stored_score(db) == first
    assert len(await published(db)) == 1
    async with db.reading() as session:
        processed = await session.scalar(select(func.count()).select_from(INBOX.processed))
    assert processed == 1


async def test_an_update_that_changes_nothing_scored_publishes_nothing(
    db: Database, handlers: dict[str, Handler], clock: ManualClock
) -> None:
    await apply(db, handlers, received())
    scored_at = clock.now()
    clock.advance(timedelta(minutes=5))

    await apply(db, handlers, updated(name="Ada Lovelace"))

    row = await stored_score(db)
    assert len(await published(db)) == 1
    assert row["profile"]["name"] == "Ada Lovelace"
    assert (row["scored_at"], row["updated_at"]) == (scored_at, clock.now())


async def test_an_update_that_changes_the_score_publishes_it_again(
    db: Database, handlers: dict[str, Handler], clock: ManualClock
) -> None:
    await apply(db, handlers, received())
    clock.advance(timedelta(minutes=5))

    await apply(db, handlers, updated(employee_count=450, demo_requested=True))

    row = await stored_score(db)
    [_, (_, event)] = await published(db)
    assert (row["score"], row["fit"], row["engagement"], row["temperature"]) == (60, 30, 30, "hot")
    assert row["scored_at"] == clock.now()
    assert (event.data.score, event.data.temperature) == (60, "hot")
    assert event.correlation_id == "request-2"
    assert event.data.lead.employee_count == 450
    assert row_rule_ids(row) == [line.rule_id for line in event.data.breakdown] == [
        "company-size-large", "target-country", "demo-requested"
    ]


async def test_an_update_for_a_lead_not_seen_yet_is_scored_and_published(
    db: Database, handlers: dict[str, Handler]
) -> None:
    await apply(db, handlers, updated(company=None))

    [(_, event)] = await published(db)
    assert (await stored_score(db))["score"] == 10
    assert [line.rule_id for line in event.data.breakdown] == ["company-size-mid",
                                                               "target-country", "company-missing"]


@pytest.mark.parametrize(
    ("changes", "score", "rule_ids"),
    [
        ({"company": None}, 10, ["company-size-mid", "target-country", "company-missing"]),
        ({"country": "US", "employee_count": 450}, 20, ["company-size-large"]),
    ],
    ids=["score-changes-temperature-stays", "only-the-breakdown-changes"],
)
async def test_any_change_of_score_or_breakdown_is_published(
    db: Database, handlers: dict[str, Handler], changes: dict[str, Any], score: float,
    rule_ids: list[str],
) -> None:
    await apply(db, handlers, received())

    await apply(db, handlers, updated(**changes))

    [(_, first), (_, second)] = await published(db)
    assert first.data.temperature == second.data.temperature == "cold"
    assert (first.data.score, second.data.score) == (20, score)
    assert [line.rule_id for line in second.data.breakdown] == rule_ids
