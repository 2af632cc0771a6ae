"""Fixtures for router tests: a migrated database, a manual clock, a routing context, helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy import select

from services.router import roster
from services.router.consumer import RouterConsumer
from services.router.handlers import handler_table
from services.router.models import INBOX, OUTBOX, assignment
from services.router.rules import RuleSet
from services.router.schemas import PersonCreate, SdrCreate, TeamCreate
from services.router.service import RouterContext
from services.router.settings import RouterSettings
from shared import tracing
from shared.clock import ManualClock
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events import (
    Envelope,
    LeadProfile,
    LeadScored,
    LeadScoredData,
    Stage,
    Temperature,
    encode_event,
)
from shared.outbox import Outbox
from tests.conftest import migrate
from tests.router.receiver import ALLOWED_WEBHOOKS

SCORES_TOPIC = "test.scores"
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Router:
    """One router's state for a test: its database, clock, settings and routing context."""

    db: Database
    clock: ManualClock
    settings: RouterSettings
    context: RouterContext

    async def add_sdr(self, name: str, webhook_url: str = "http://127.0.0.1:9/hook") -> str:
        body = SdrCreate(
            name=name, email=f"{name.lower()}@seller.example", webhook_url=webhook_url
        )
        async with self.db.transaction() as session:
            joined = await roster.create_sdr(session, self.clock, body, self.context.channels)
        sdr_id: str = joined.row["id"]
        return sdr_id

    async def add_person(self, name: str, **fields: Any) -> str:
        """Add a person (an SDR unless `role` says otherwise); fields as in `PersonCreate`."""
        fields.setdefault("email", f"{name.lower()}@seller.example")
        async with self.db.transaction() as session:
            joined = await roster.create_person(
                session, self.clock, PersonCreate.model_validate({"name": name, **fields}),
                self.context.channels,
            )
        person_id: str = joined.row["id"]
        return person_id

    async def add_team(self, name: str, **fields: Any) -> str:
        async with self.db.transaction() as session:
            row = await roster.create_team(
                session, self.clock, TeamCreate.model_validate({"name": name, **fields})
            )
        team_id: str = row["id"]
        return team_id

    async def set_rules(self, *rules: dict[str, Any]) -> str:
        """Store a rule set; returns its version."""
        async with self.db.transaction() as session:
            row = await roster.store_rules(
                session, self.clock, RuleSet.model_validate({"rules": list(rules)})
            )
        return str(row["version"])

    async def consume(self, *events: Envelope, consumer: EventConsumer | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Apply `events` as one batch through the shared consumer loop, as Kafka would, each
        record with `headers`."""
        consumer = consumer or self.consumer()
        records = [
            ConsumerRecord(
                topic=SCORES_TOPIC, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                key=event.lead_id.encode(), value=encode_event(event), checksum=None,
                serialized_key_size=len(event.lead_id), serialized_value_size=0,
                headers=list(headers),
            )
            for offset, event in enumerate(events)
        ]
        batch = {TopicPartition(SCORES_TOPIC, 0): records}
        with tracing.consuming("router", batch):
            await consumer.apply(batch)

    def consumer(self, *, one_by_one: bool = False) -> EventConsumer:
        """The router's consumer (its batch path), or with `one_by_one` the shared loop
        applying each event through its handler."""
        if not one_by_one:
            return RouterConsumer(
                context=self.context, name="router", db=self.db, inbox=INBOX, consumer=None,
                handlers=handler_table(self.context), clock=self.clock,
            )
        return EventConsumer(
            name="router",
            db=self.db,
            inbox=INBOX,
            consumer=None,
            handlers=handler_table(self.context),
            clock=self.clock,
        )

    async def assignments(self, lead_id: str) -> list[dict[str, Any]]:
        async with self.db.reading() as session:
            rows = await session.execute(
                select(assignment)
                .where(assignment.c.lead_id == lead_id)
                .order_by(assignment.c.attempt)
            )
        return [dict(row) for row in rows.mappings()]

    async def rows(self, table: Any) -> list[dict[str, Any]]:
        async with self.db.reading() as session:
            result = await session.execute(select(table))
        return [dict(row) for row in result.mappings()]

    async def events(self) -> list[dict[str, Any]]:
        """The events in the outbox, oldest first, as JSON objects."""
        async with self.db.reading() as session:
            result = await session.execute(select(OUTBOX.events).order_by(OUTBOX.events.c.id))
        return [json.loads(row.payload) for row in result]


def scored(
    lead_id: str,
    temperature: Temperature = "hot",
    *,
    clock: ManualClock,
    score: float = 87.0,
    email: str | None = None,
    stage: Stage = "lead",
    **profile: Any,
) -> LeadScored:
    return LeadScored(
        producer="scorer",
        lead_id=lead_id,
        occurred_at=clock.now(),
        data=LeadScoredData(
            score=score,
            fit=50.0,
            engagement=score - 50.0,
            temperature=temperature,
            model_version="test",
            breakdown=[],
            stage=stage,
            lead=LeadProfile(
                email=email or f"{lead_id}@buyer.example",
                name="Ada Lovelace",
                company="Analytical Engines",
                phone="+44 20 7946 0000",
                demo_requested=True,
                **profile,
            ),
        ),
    )


def router_settings(database_url: str, **overrides: Any) -> RouterSettings:
    overrides.setdefault("admin_token", ADMIN_TOKEN)
    overrides.setdefault("sla_reminder_fraction", 0)
    overrides.setdefault("webhook_allowed_urls", ALLOWED_WEBHOOKS)
    return RouterSettings(database_url=database_url, **overrides)


@pytest.fixture
def router_url(database_url: str) -> str:
    """`database_url` with router's tables; Alembic runs its own event loop, so not async."""
    migrate("router", database_url)
    return database_url


@pytest.fixture
async def router(router_url: str) -> AsyncIterator[Router]:
    settings = router_settings(router_url)
    clock = ManualClock()
    db = Database(settings.database_url)
    outbox = Outbox(
        OUTBOX, topic=settings.topics.assignments, shards=settings.outbox_shards, clock=clock
    )
    try:
        yield Router(db, clock, settings, RouterContext.build(settings, outbox, clock))
    finally:
        await db.dispose()


def types_of(events: Sequence[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]
