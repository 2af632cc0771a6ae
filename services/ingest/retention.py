"""The retention purge: raw submissions older than `LEADRELAY_SUBMISSION_RETENTION_DAYS` go."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from services.ingest import repository
from services.ingest.service import IngestContext
from shared.db import Database

logger = logging.getLogger(__name__)


class SubmissionRetention:
    def __init__(self, db: Database, context: IngestContext) -> None:
        self.db = db
        self.context = context

    async def purge_once(self) -> int:
        days = self.context.settings.submission_retention_days
        cutoff = self.context.clock.now() - timedelta(days=days)
        async with self.db.transaction() as session:
            purged = await repository.purge_submissions(session, cutoff)
        if purged:
            logger.info("purged %d submissions received before %s", purged, cutoff.isoformat())
        return purged

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.context.settings.purge_interval_seconds)
            await self.purge_once()
