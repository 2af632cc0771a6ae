"""Fixtures for the scorer's tests: a migrated database, a manual clock, the handlers, helpers
that apply events and read back what the scorer stored and published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from services.scorer import repository
from services.scorer.context import ScorerContext
from services.scorer.handlers import handler_table
from services.scorer.models import OUTBOX
from services.scorer.scoring_model import ScoringModel, load_scoring_model
from shared.clock import ManualClock
from shared.consumer import Handler
from shared.db import Database
from shared.events import (
    Envelope,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    SignalRecorded,
    SignalRecordedData,
    Topics,
    decode_event,
)
from shared.metrics import ServiceMetrics
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
def model() -> ScoringModel:
    return load_scoring_model()


@pytest.fixture
def context(clock: ManualClock, model: ScoringModel) -> ScorerContext:
    outbox = Outbox(OUTBOX, topic=TOPICS.scores, shards=4, clock=clock)
    return ScorerContext.build(outbox, clock, model, ServiceMetrics("scorer"))


@pytest.fixture
def handlers(context: ScorerContext) -> dict[str, Handler]:
    return handler_table(context)


@dataclass
class Scorer:
    """The scorer's handlers over a real database, driven event by event."""

    db: Database
    handlers: dict[str, Handler]
    clock: ManualClock
    lead_id: str = LEAD_ID
    signal_count: int = field(default=0)

    async def apply(self, *events: Envelope) -> None:
        for event in events:
            async with self.db.transaction() as session:
                await self.handlers[event.type](session, event)  # type: ignore[attr-defined]

    def received(self, profile: LeadProfile = PROFILE) -> LeadReceived:
        return LeadReceived(
            producer="ingest", lead_id=self.lead_id, correlation_id="request-1",
            occurred_at=self.clock.now(), data=LeadReceivedData(lead=profile),
        )

    def signal(
        self, signal_type: str, *, at: datetime | None = None, signal_id: str | None = None,
        url: str | None = None,
    ) -> SignalRecorded:
        self.signal_count += 1
        return SignalRecorded(
            producer="ingest", lead_id=self.lead_id,
            data=SignalRecordedData(
                signal_id=signal_id or f"signal-{self.signal_count}",
                signal_type=signal_type,
                signal_at=at or self.clock.now(),
                url=url,
            ),
        )

    async def stored(self) -> RowMapping:
        async with self.db.reading() as session:
            row = await repository.find_score(session, self.lead_id)
        assert row is not None
        return row

    async def published(self, event_type: str | None = None) -> list[Any]:
        async with self.db.reading() as session:
            rows = (
                await session.execute(select(OUTBOX.events).order_by(OUTBOX.events.c.id))
            ).mappings().all()
        events = [decode_event(row["payload"].encode()) for row in rows]
        return [event for event in events if event_type in (None, event.type)]  # type: ignore[union-attr]


@pytest.fixture
def scorer(db: Database, handlers: dict[str, Handler], clock: ManualClock) -> Scorer:
    return Scorer(db, handlers, clock)
