"""router's consumer: the shared loop, with a fast path for runs of `lead.scored`.

Applied one by one (as the shared `EventConsumer` does), each scored lead costs about ten
statements. `RouterConsumer.apply` hands each run of consecutive `lead.scored` events of a
batch to `service.route_scored_leads`, which reads the leads once, decides on the
transaction's routing state and writes everything in one statement per table, with the
same outcome as one by one. Other events (erasure) go through their handlers in order. If
anything in the fast path fails for a reason other than an outage (a second active
assignment refused by the database, a broken message), the batch is rolled back and applied
again one event at a time by the shared loop, which dead-letters what cannot be applied.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.router import service
from services.router.service import RouterContext
from shared.consumer import EventConsumer, Records
from shared.db import is_outage
from shared.events import Event, LeadScored, decode_event

logger = logging.getLogger(__name__)


class RouterConsumer(EventConsumer):
    """`EventConsumer` whose `apply` routes a batch's scored leads together."""

    def __init__(self, *, context: RouterContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context

    async def apply(self, records: Records) -> None:
        try:
            async with self.db.transaction() as session:
                applied, duplicates = await self._apply_in_bulk(session, records)
        except Exception as error:
            if is_outage(error):
                raise
            logger.warning("%s: batch fast path failed (%s); applying one event at a time",
                           self.name, type(error).__name__)
            await super().apply(records)
            return
        self.applied += len(applied)
        self.duplicates += len(duplicates)
        for event in applied:
            self.metrics.events_applied.labels(event.type).inc()
        for event in duplicates:
            self.metrics.events_duplicate.labels(event.type).inc()

    async def _apply_in_bulk(
        self, session: AsyncSession, records: Records
    ) -> tuple[list[Event], list[Event]]:
        events: list[Event] = []
        for messages in records.values():
            for message in messages:
                event = decode_event(message.value)  # a broken message: the slow path keeps it
                if event is not None and event.type in self.handlers:
                    events.append(event)
        if not events:
            return [], []
        new_ids = await self._record_processed(session, events)
        fresh: list[Event] = []
        duplicates: list[Event] = []
        for event in events:
            if str(event.event_id) in new_ids:
                new_ids.discard(str(event.event_id))
                fresh.append(event)
            else:
                duplicates.append(event)
        run: list[LeadScored] = []
        for event in fresh:
            if isinstance(event, LeadScored):
                run.append(event)
                continue
            await service.route_scored_leads(session, self.context, run)
            run = []
            await self.handlers[event.type](session, event)
        await service.route_scored_leads(session, self.context, run)
        return fresh, duplicates
