"""The scorer's consumer: the shared loop, with a fast path for whole batches of signals.

Signals and profile changes are most of what the scorer consumes. Applied one by one (as the
shared `EventConsumer` does), each costs about ten statements: a savepoint, the processed-event
record, the lead, its signals, the new signal, the score, the outbox. `ScorerConsumer.apply_fresh`
instead reads every lead of the batch in one statement, with the tally of its signals kept in
its row (`services.scorer.signal_tally`; the signals of the leads without a current tally in a
second one), takes the events into each lead's state in their order, stores the new signals in
one statement that says which ones a lead had already (those count once: their events are
taken back), and decides each lead once (`service.rescore_all`, from the tally plus the new
signals, which scores exactly as the whole history would):
the stage moves exactly as one event at a time would move it (an MQL transition is kept and
published at the event that caused it), the stored row is the one the last event would leave,
and one `lead.scored` carries that final state if it changed. Everything is written back in a
handful of statements: processed-event records, signals, scores, history, outbox.

Other events (the router's, erasure) go through their handlers in order, after the pending
state of their lead is written. If anything in the fast path fails for a reason other than an
outage, the batch is rolled back and applied again one event at a time by the shared loop,
which dead-letters what cannot be applied: the fast path never loses a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository, service
from services.scorer.context import ScorerContext
from services.scorer.score_result import Signal
from services.scorer.service import Rescoring
from services.scorer.signal_tally import SignalTally
from shared.consumer import BatchEventConsumer
from shared.events import (
    Event,
    LeadProfile,
    LeadReceived,
    LeadUpdated,
    SignalRecorded,
)

IN_MEMORY = frozenset({"lead.received", "lead.updated", "signal.recorded"})


@dataclass
class _Lead:
    """One lead of the batch: its stored row, and its events since that row was read."""

    row: dict[str, Any] | None
    signal_ids: set[str]
    """The ids of the lead's signals known: its whole history (without a stored tally) and the
    batch's signals taken in."""
    profile: LeadProfile | None
    """The profile as the events seen so far leave it; None while the lead is not received."""
    tally: SignalTally | None = None
    """The stored tally `signal_list` adds to; None: `signal_list` is the whole history."""
    new_signals: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Rescoring] = field(default_factory=list)
    """The events that rescore the lead, decided together when the lead is written."""
    signal_list: list[Signal] = field(default_factory=list)

    @property
    def erased(self) -> bool:
        return self.row is not None and self.row["erased_at"] is not None

    def forget(self, known: set[str]) -> None:
        """Take back the signals the lead turned out to have already (ids in `known`), and the
        steps they made, as if they had been dropped when noted."""
        if not known:
            return
        kept_before = [0]
        for signal in self.signal_list:
            kept_before.append(kept_before[-1] + (signal.signal_id not in known))
        kept = [signal for signal in self.signal_list if signal.signal_id not in known]
        steps = []
        for step in self.steps:
            seen = len(self.signal_list) if step.seen is None else step.seen
            if step.cause == "signal" and self.signal_list[seen - 1].signal_id in known:
                continue
            steps.append(replace(step, signals=kept, seen=kept_before[seen]))
        self.signal_list, self.steps = kept, steps


class ScorerConsumer(BatchEventConsumer):
    """`BatchEventConsumer` that takes a whole batch in a few statements."""

    def __init__(self, *, context: ScorerContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context

    async def apply_fresh(self, session: AsyncSession, events: list[Event]) -> None:
        leads = await self._read_leads(
            session, {event.lead_id for event in events if event.type in IN_MEMORY}
        )
        for event in events:
            if isinstance(event, LeadReceived | LeadUpdated | SignalRecorded):
                if event.lead_id not in leads:  # its handler-applied event came before
                    leads.update(await self._read_leads(session, {event.lead_id}))
                self._note(leads[event.lead_id], event)
                continue
            pending = leads.pop(event.lead_id, None)
            if pending is not None:
                await self._write(session, {event.lead_id: pending})
            await self.handlers[event.type](session, event)
        await self._write(session, leads)

    async def _read_leads(self, session: AsyncSession, lead_ids: set[str]) -> dict[str, _Lead]:
        """The leads' rows, each with its stored tally when current, else its whole history."""
        if not lead_ids:
            return {}
        model = self.context.models.current
        rows = await repository.find_scores_for_update(session, sorted(lead_ids))
        leads: dict[str, _Lead] = {}
        for lead_id, stored in rows.items():
            row = dict(stored)
            if row["erased_at"] is not None:
                leads[lead_id] = _Lead(row, set(), None)
                continue
            tally = SignalTally.stored(row, model)
            if tally is not None:
                leads[lead_id] = _Lead(
                    row, set(), LeadProfile.model_validate(row["profile"]), tally
                )
        untallied = sorted(lead_ids - leads.keys())
        history = await repository.signals_of_leads(session, untallied)
        for lead_id in untallied:
            known_row = dict(rows[lead_id]) if lead_id in rows else None
            signals = [service.signal_of(item) for item in history[lead_id]]
            profile = (LeadProfile.model_validate(known_row["profile"])
                       if known_row is not None else None)
            leads[lead_id] = _Lead(
                known_row, {signal.signal_id for signal in signals}, profile, signal_list=signals
            )
        return leads

    def _note(self, lead: _Lead, event: LeadReceived | LeadUpdated | SignalRecorded) -> None:
        """Take the event into the lead's state; the rescoring waits until the lead is written."""
        if lead.erased:
            return
        now = self.clock.now()
        if isinstance(event, SignalRecorded):
            data = event.data
            if data.signal_id in lead.signal_ids:
                return
            lead.new_signals.append(service.signal_row(event.lead_id, data, now))
            lead.signal_ids.add(data.signal_id)
            lead.signal_list.append(
                Signal(data.signal_id, data.signal_type, data.signal_at, data.url)
            )
            if lead.profile is None:  # not received yet: the signal counts when it is
                return
            cause, active = "signal", True
        else:
            lead.profile, cause, active = event.data.lead, "profile", False
        lead.steps.append(Rescoring(
            lead.profile, lead.signal_list, now, cause, event.correlation_id, active,
            seen=len(lead.signal_list),
            received_at=event.occurred_at if isinstance(event, LeadReceived) else None,
        ))

    async def _write(self, session: AsyncSession, leads: dict[str, _Lead]) -> None:
        stored = await repository.insert_new_signals(
            session, [row for lead in leads.values() for row in lead.new_signals]
        )
        for lead_id, lead in leads.items():
            # A lead read with its tally, not its history, learns here which signals it had.
            lead.forget({row["signal_id"] for row in lead.new_signals
                         if (lead_id, row["signal_id"]) not in stored})
        await service.write_rescored(session, self.context, [
            service.rescore_all(self.context, lead_id, lead.row, lead.steps, tally=lead.tally)
            for lead_id, lead in leads.items()
            if lead.steps
        ])
