"""The retention purge: raw submissions and finished CRM fetches past their retention,
idempotency keys past 48 h."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from services.ingest import crm_fetches, repository
from services.ingest.service import IngestContext
from shared.db import Database

IDEMPOTENCY_HOURS = 48
"""Idempotency keys are kept two days (Stripe promises 24 hours)."""

logger = logging.getLogger(__name__)


class SubmissionRetention:
    def __init__(self, db: Database, context: IngestContext) -> None:
        self.db = db
        self.context = context

    async def purge_once(self) -> int:
        days = self.context.settings.submission_retention_days
        cutoff = self.context.clock.now() - timedelta(days=days)
        keys_cutoff = self.context.clock.now() - timedelta(hours=IDEMPOTENCY_HOURS)
        async with self.db.transaction() as session:
            purged = await repository.purge_submissions(session, cutoff)
            await crm_fetches.purge_finished(session, cutoff)
            await repository.purge_idempotency_keys(session, keys_cutoff)
        if purged:
            logger.info("purged %d submissions received before %s", purged, cutoff.isoformat())
        return purged

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.context.settings.purge_interval_seconds)
            await self.purge_once()
