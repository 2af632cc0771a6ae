"""Fixtures for the shared plumbing: one sample service's tables, created straight from metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.db import Database, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import outbox_tables

METADATA = service_metadata()
OUTBOX = outbox_tables(METADATA, "sample", lanes=True)
INBOX = inbox_tables(METADATA, "sample")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An empty database holding the sample service's outbox and inbox tables."""
    db = Database(database_url)
    async with db.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield db
    await db.dispose()
