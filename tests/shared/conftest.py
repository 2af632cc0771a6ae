"""Fixtures for the shared plumbing: one sample service's tables, created straight from metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.db import Database, service_metadata
from shared.events import LeadErased, LeadErasedData
from shared.inbox import inbox_tables
from shared.outbox import outbox_tables

METADATA = service_metadata()
OUTBOX = outbox_tables(METADATA, "sample", lanes=True)
INBOX = inbox_tables(METADATA, "sample")


def erased(lead_id: str) -> LeadErased:
    """The simplest event there is, to consume: a lead's erasure."""
    return LeadErased(producer="test", lead_id=lead_id, data=LeadErasedData())


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An empty database holding the sample service's outbox and inbox tables."""
    db = Database(database_url)
    async with db.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield db
    await db.dispose()
