"""Surviving a broker that lost its records: publish again what the consumers may not have applied.

When the broker turns out to be a new one (`shared.broker_epoch`), the events it had
acknowledged but the consumers had not read yet are gone, and so are the consumers' offsets.
The outbox still holds them: `BrokerRecovery.recover` establishes the new epoch, then, once
per service and epoch, marks the events published in the last `window` before the newest one
as unpublished again, in the transaction that records the epoch as adopted (a row in the
service's processed-event table, so one instance does it even when several run). The relay then
publishes them like any pending row: in batches, in outbox order, so each lead's events arrive
in the order they were written. Consumers drop those they had applied (their processed-event
rows) and apply the others.

The window is counted back from the newest published event, not from now: after a whole system
was stopped for an hour, its last minutes are still what a consumer may have missed. It must
cover how far behind a consumer can be when the broker is lost (`outbox_republish_minutes`).

Every adoption is logged ("broker epoch ... adopted") and counted
(`leadrelay_broker_epochs_adopted_total`, `leadrelay_events_republished_total`), so a
benchmark can tell when recovery happened.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, update

from shared.broker_epoch import BrokerEpoch, BrokerEpochs
from shared.clock import Clock, SystemClock
from shared.db import Database, insert_ignoring_conflicts
from shared.inbox import EPOCH_ADOPTER, InboxTables
from shared.metrics import ServiceMetrics
from shared.outbox import OutboxTables

logger = logging.getLogger(__name__)

class BrokerRecovery:
    """Gives the outbox relay the epoch it may trust, recovering from a new broker first."""

    def __init__(
        self,
        epochs: BrokerEpochs,
        db: Database,
        outbox: OutboxTables,
        inbox: InboxTables,
        *,
        window: timedelta,
        metrics: ServiceMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.epochs = epochs
        self.db = db
        self.outbox = outbox
        self.inbox = inbox
        self.window = window
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.adopted: BrokerEpoch | None = None
        self._record_adoption = insert_ignoring_conflicts(
            inbox.processed, db.dialect).returning(inbox.processed.c.event_id)
        events = outbox.events
        self._newest_published = select(func.max(events.c.published_at))
        self._publish_again = update(events).where(events.c.published_at.is_not(None))

    @property
    def trusted(self) -> BrokerEpoch | None:
        """The epoch whose acknowledgements count: established and adopted."""
        current = self.epochs.current
        return current if current is not None and current == self.adopted else None

    async def recover(self) -> BrokerEpoch:
        """Establish the broker's epoch and adopt it (publishing events again if it is new)."""
        epoch = self.epochs.current or await self.epochs.establish()
        if epoch != self.adopted:
            await self.adopt(epoch)
            self.adopted = epoch
        return epoch

    async def unchanged(self, epoch: BrokerEpoch) -> bool:
        return await self.epochs.unchanged(epoch)

    def forget(self) -> None:
        self.epochs.forget()

    async def adopt(self, epoch: BrokerEpoch) -> int | None:
        """Record `epoch` as adopted and mark the window's events unpublished; None when this
        service had adopted it already (another instance, or before a restart)."""
        async with self.db.transaction() as session:
            recorded = (await session.scalars(self._record_adoption, [{
                "consumer": EPOCH_ADOPTER, "event_id": epoch.id, "event_type": "broker.epoch",
                "processed_at": self.clock.now(),
            }])).all()
            if not recorded:
                return None
            newest = await session.scalar(self._newest_published)
            republished = 0
            if newest is not None:
                result = await session.execute(
                    self._publish_again.where(
                        self.outbox.events.c.published_at >= newest - self.window)
                    .values(published_at=None))
                republished = int(getattr(result, "rowcount", 0) or 0)
        logger.warning(
            "broker epoch %s adopted (a new broker, or the first start on this one): "
            "publishing %d events again from the outbox", epoch.id, republished)
        if self.metrics is not None:
            self.metrics.broker_epochs_adopted.inc()
            self.metrics.events_republished.inc(republished)
        return republished
