"""router's consumer: the shared loop, with a fast path for runs of `lead.scored`.

Applied one by one (as the shared `EventConsumer` does), each scored lead costs about ten
statements. `RouterConsumer.apply_fresh` hands each run of consecutive `lead.scored` events of a
batch to `service.route_scored_leads`, which reads the leads once, decides on the
transaction's routing state and writes everything in one statement per table, with the
same outcome as one by one. Other events (erasure) go through their handlers in order. If
anything in the fast path fails for a reason other than an outage (a second active
assignment refused by the database, a broken message), the batch is rolled back and applied
again one event at a time by the shared loop, which dead-letters what cannot be applied.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.router import service
from services.router.service import RouterContext
from shared.consumer import BatchEventConsumer
from shared.events import Event, LeadScored


class RouterConsumer(BatchEventConsumer):
    """`BatchEventConsumer` that routes each run of a batch's scored leads together."""

    def __init__(self, *, context: RouterContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context

    async def apply_fresh(self, session: AsyncSession, events: list[Event]) -> None:
        run: list[LeadScored] = []
        for event in events:
            if isinstance(event, LeadScored):
                run.append(event)
                continue
            await service.route_scored_leads(session, self.context, run)
            run = []
            await self.handlers[event.type](session, event)
        await service.route_scored_leads(session, self.context, run)
