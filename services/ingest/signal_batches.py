"""Signals in bulk: a batch of signals is stored in a few statements, whatever its size.

`record_signals` reads the batch's leads at once (one statement by id, one by email, the
latter locked), creates the leads of unknown emails together (one new lead per email, however
many of its signals the batch holds), looks up which of the batch's signals were recorded
before (one statement) and writes the others' events in one insert per lane:

- the **fast lane** (`leadrelay.leads`, beside new leads): buying signals, a request to talk to
  sales (`FAST_LANE_TYPES`), which must reach an SDR at once;
- the **bulk lane** (`leadrelay.signals`): every other signal (opens, clicks, page views...),
  which a campaign sends by the thousand and the scorer reads when the fast lane is empty.

Each signal keeps the id `signals.SignalInput.stable_id` gives it and an event id derived from
that, so a batch sent again (or a signal repeated within one) is a `duplicate` that writes
nothing. A signal of a known lead changes nothing on the lead: no submission, no merge.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import lead_writes, service
from services.ingest.lead_writes import SESSION_KEY, LeadWrites
from services.ingest.models import lead
from services.ingest.schemas import LeadSubmission
from services.ingest.service import IngestContext, Intake
from services.ingest.signals import SIGNAL_NAMESPACE, SignalInput, SignalResult
from shared.events import SignalRecorded, SignalRecordedData
from shared.problems import ProblemError

FAST_LANE_TYPES = frozenset({"demo_request", "quote_request", "trial_signup"})
"""Signal types that go out with new leads: a lead asking to talk to sales, or trying the
product, is routed at once whatever a campaign is sending meanwhile."""

_LEAD_IDS = select(lead.c.id).where(lead.c.id.in_(bindparam("ids", expanding=True)))


async def record_signals(
    session: AsyncSession, context: IngestContext, signals: Sequence[SignalInput],
    correlation_id: str | None = None,
) -> list[SignalResult]:
    """Record `signals` in the caller's transaction; one result each, in their order.

    A signal naming a lead id nobody has is a 404 for the whole batch (nothing is written).
    """
    writes = lead_writes.lead_writes(session)
    if writes is not None:
        return await _record(session, context, writes, signals, correlation_id)
    writes = LeadWrites(context.outbox)
    session.info[SESSION_KEY] = writes
    try:
        return await _record(session, context, writes, signals, correlation_id)
    finally:
        session.info.pop(SESSION_KEY, None)


async def record_signal(
    session: AsyncSession, context: IngestContext, signal: SignalInput,
    correlation_id: str | None = None,
) -> SignalResult:
    """`record_signals` of one signal."""
    return (await record_signals(session, context, [signal], correlation_id))[0]


async def _record(
    session: AsyncSession, context: IngestContext, writes: LeadWrites,
    signals: Sequence[SignalInput], correlation_id: str | None,
) -> list[SignalResult]:
    now = context.clock.now()
    await _check_lead_ids(session, writes, {s.lead_id for s in signals if s.lead_id})
    lead_of_email, created = await _leads_of_emails(session, context, writes, signals,
                                                    correlation_id)
    drafts: list[tuple[SignalResult, SignalRecorded]] = []
    for signal in signals:
        lead_id = signal.lead_id or lead_of_email[str(signal.email)]
        at = signal.occurred_at or now
        signal_id = signal.stable_id(lead_id, at)
        first_of_new_lead = signal.lead_id is None and signal.email in created
        if first_of_new_lead:
            created.discard(str(signal.email))
        drafts.append((
            SignalResult(signal_id=signal_id, lead_id=lead_id, status="recorded",
                         lead_created=first_of_new_lead),
            SignalRecorded(
                event_id=uuid.uuid5(SIGNAL_NAMESPACE, signal_id), producer=service.PRODUCER,
                lead_id=lead_id, correlation_id=correlation_id, occurred_at=now,
                data=SignalRecordedData(
                    signal_id=signal_id, signal_type=signal.type, signal_at=at,
                    source=signal.source, url=signal.url, properties=signal.properties),
            ),
        ))
    recorded = await _recorded_before(session, context, [str(e.event_id) for _, e in drafts])
    fast: list[SignalRecorded] = []
    bulk: list[SignalRecorded] = []
    results: list[SignalResult] = []
    for result, event in drafts:
        if str(event.event_id) in recorded:
            results.append(result.model_copy(update={"status": "duplicate"}))
            continue
        recorded.add(str(event.event_id))
        (fast if event.data.signal_type in FAST_LANE_TYPES else bulk).append(event)
        results.append(result)
    await writes.flush(session)  # the new leads and their `lead.received` before the signals
    await context.outbox.add(session, *fast)
    await context.outbox.add(session, *bulk, topic=context.settings.topics.signals)
    return results


async def _check_lead_ids(session: AsyncSession, writes: LeadWrites, ids: set[str]) -> None:
    if not ids:
        return
    await writes.flush(session)
    found = set((await session.scalars(_LEAD_IDS, {"ids": sorted(ids)})).all())
    for lead_id in sorted(ids - found):
        raise ProblemError(404, "Lead not found", f"No lead has the id {lead_id!r}.")


async def _leads_of_emails(
    session: AsyncSession, context: IngestContext, writes: LeadWrites,
    signals: Sequence[SignalInput], correlation_id: str | None,
) -> tuple[dict[str, str], set[str]]:
    """Lead id by email of the signals that name their lead by email, creating the unknown
    ones (queued in `writes`); and the emails whose lead was created."""
    sources: dict[str, str | None] = {}
    for signal in signals:
        if signal.lead_id is None and signal.email is not None:
            sources.setdefault(signal.email, signal.source)
    await writes.load(session, sorted(sources))
    lead_of_email: dict[str, str] = {}
    created: set[str] = set()
    for email, source in sources.items():
        row = writes.leads.get(email)
        if row is not None:
            lead_of_email[email] = row["id"]
            continue
        accepted = await service.submit_lead(
            session, context, LeadSubmission(email=email, source=source),
            Intake(channel="signal", correlation_id=correlation_id),
        )
        lead_of_email[email] = accepted.lead_id
        created.add(email)
    return lead_of_email, created


async def _recorded_before(
    session: AsyncSession, context: IngestContext, event_ids: list[str]
) -> set[str]:
    """Those of `event_ids` the outbox holds already (a signal sent before)."""
    events = context.outbox.tables.events
    found = await session.scalars(
        select(events.c.event_id).where(events.c.event_id.in_(sorted(set(event_ids)))))
    return set(found.all())
