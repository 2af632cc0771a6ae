"""The decay sweep: leads that went quiet cool down, and the router hears about it once.

Each lead's `next_check_at` (computed when it is scored) is the moment decay alone will move it
to another temperature band. Every `decay_sweep_seconds` the `decay-sweep` loop claims the leads
whose moment has come, in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances
share the work), and rescores each; the crossing publishes `lead.scored`, and the new
`next_check_at` points at the next crossing, if any. The state is in the database: a restart
misses nothing. `DecaySweep.tick` is what a test calls, with a `ManualClock`, instead of sleeping.
"""

from __future__ import annotations

from services.scorer import service
from services.scorer.context import ScorerContext
from shared.db import Database
from shared.loops import repeat


class DecaySweep:
    """The `decay-sweep` background loop."""

    def __init__(
        self, db: Database, context: ScorerContext, *, interval: float, batch_size: int
    ) -> None:
        self.db = db
        self.context = context
        self.interval = interval
        self.batch_size = batch_size

    async def run(self) -> None:
        async def tick() -> bool:
            await self.tick()
            return False

        await repeat(tick, interval=self.interval, name="decay sweep")

    async def tick(self) -> int:
        """Rescore every lead that is due, a batch per transaction; returns how many."""
        swept = 0
        while True:
            async with self.db.transaction() as session:
                count = await service.rescore_due(session, self.context, limit=self.batch_size)
            swept += count
            if count < self.batch_size:
                return swept
