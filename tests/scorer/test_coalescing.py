"""Several events of one lead in a batch are decided together, and that changes nothing that
one event at a time decides: the stored rows, the stage history and its events are the same,
and the last `lead.scored` of each lead says the same to the router (temperature, stage,
buying signal). Only the states in between are skipped: what each published `lead.scored` says
to the router, one event at a time published too, in the same order. (Signals that change only
the engagement points are stored, not published, so the engagement points of a published
score may differ between the two ways.)

Generated lives of many leads (signals of every kind, resent signals, signals before the lead,
profile changes, negative and buying signals, the router's acceptances, rejections and
nurturing) are applied both ways, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy import select

from services.scorer.consumer import ScorerConsumer
from services.scorer.context import ScorerContext
from services.scorer.models import OUTBOX, lead_score, stage_change
from shared.clock import ManualClock
from shared.consumer import Handler
from shared.db import Database
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Envelope,
    LeadNurture,
    LeadNurtureData,
    LeadProfile,
    LeadReceived,
    LeadReceivedData,
    LeadUpdated,
    LeadUpdatedData,
    SignalRecorded,
    SignalRecordedData,
    decode_event,
)
from tests.scorer.test_consumer import consumer_for, record

SIGNALS: list[tuple[str, str | None]] = [
    ("email_open", None), ("email_open", None), ("email_click", None),
    ("content_download", None), ("content_download", None), ("webinar_attended", None),
    ("page_view", "https://acme.io/pricing"), ("page_view", "https://acme.io/careers"),
    ("unsubscribe", None), ("email_bounce", None), ("demo_request", None),
    ("custom:podcast", None),
]
PROFILES = [
    LeadProfile(email="ada@acme.io", company="Acme", country="FR", employee_count=120),
    LeadProfile(email="ada@acme.io", company="Acme", country="FR", employee_count=800,
                job_title="VP Sales"),
    LeadProfile(email="kid@gmail.com", country="US", job_title="Student"),
    LeadProfile(email="bob@rival.example", country="DE", employee_count=20),
]


def life(rng: random.Random, lead_id: str, clock: ManualClock, length: int) -> list[Envelope]:
    """One lead's events, in the order ingest and the router would send them."""
    events: list[Envelope] = []
    received = rng.random() < 0.8
    sent: list[SignalRecorded] = []
    for number in range(length):
        roll = rng.random()
        if not received and number > 0 and roll < 0.3:
            received = True
            events.append(LeadReceived(producer="ingest", lead_id=lead_id,
                                       data=LeadReceivedData(lead=rng.choice(PROFILES))))
        elif number == 0 and received:
            events.append(LeadReceived(producer="ingest", lead_id=lead_id,
                                       data=LeadReceivedData(lead=rng.choice(PROFILES))))
        elif roll < 0.1:
            events.append(LeadUpdated(producer="ingest", lead_id=lead_id, data=LeadUpdatedData(
                lead=rng.choice(PROFILES), changed_fields=["employee_count"])))
        elif roll < 0.15 and sent:
            events.append(rng.choice(sent))  # resent
        elif roll < 0.2:
            events.append(AssignmentAccepted(producer="router", lead_id=lead_id,
                                             data=AssignmentAcceptedData(
                                                 assignment_id=str(uuid.uuid4()), sdr_id="s",
                                                 accepted_at=clock.now(), within_sla=True)))
        elif roll < 0.23:
            events.append(AssignmentRejected(producer="router", lead_id=lead_id,
                                             data=AssignmentRejectedData(
                                                 assignment_id=str(uuid.uuid4()), sdr_id="s",
                                                 reason_code="no_budget")))
        elif roll < 0.26:
            events.append(LeadNurture(producer="router", lead_id=lead_id,
                                      data=LeadNurtureData(reason="cold")))
        else:
            signal_type, url = rng.choice(SIGNALS)
            signal = SignalRecorded(producer="ingest", lead_id=lead_id, data=SignalRecordedData(
                signal_id=f"{lead_id[:8]}-{number}", signal_type=signal_type, url=url,
                signal_at=clock.now() - timedelta(days=rng.uniform(0, 40)),
            ))
            sent.append(signal)
            events.append(signal)
    return events


def interleaved(rng: random.Random, lives: list[list[Envelope]]) -> list[Envelope]:
    """All lives merged at random, each lead's events staying in their order (one partition)."""
    queues = [list(events) for events in lives]
    merged: list[Envelope] = []
    while any(queues):
        queue = rng.choice([queue for queue in queues if queue])
        merged.append(queue.pop(0))
    return merged


def renamed(event: Envelope, lead_id: str) -> Envelope:
    """The same event about another lead (a second copy of the same life)."""
    return event.model_copy(update={"lead_id": lead_id})


async def state_of(db: Database, lead_id: str) -> dict[str, Any]:
    async with db.reading() as session:
        row = (await session.execute(
            select(lead_score).where(lead_score.c.lead_id == lead_id)
        )).mappings().first()
        history = (await session.execute(
            select(stage_change).where(stage_change.c.lead_id == lead_id)
            .order_by(stage_change.c.id)
        )).mappings().all()
    return {
        # `scored_at`: when a score was last published, which differs as the published states
        # in between do (signals that move only the engagement points publish nothing).
        "row": None if row is None else {k: v for k, v in row.items()
                                         if k not in ("lead_id", "scored_at")},
        "history": [{k: v for k, v in entry.items() if k not in ("id", "lead_id",
                                                                   "cause_event_id")}
                    for entry in history],
    }


async def published(db: Database) -> dict[str, list[tuple[str, Any]]]:
    async with db.reading() as session:
        payloads = (await session.scalars(
            select(OUTBOX.events.c.payload).order_by(OUTBOX.events.c.id)
        )).all()
    by_lead: dict[str, list[tuple[str, Any]]] = {}
    for payload in payloads:
        event: Any = decode_event(payload.encode())
        by_lead.setdefault(event.lead_id, []).append(
            (event.type, event.data.model_dump(mode="json", exclude={"cause_event_id"}))
        )
    return by_lead


def routing(scored: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    """What the `lead.scored` events tell the router, each change once."""
    said: list[tuple[Any, ...]] = []
    for _, data in scored:
        fields = (data["temperature"], data["stage"], data["buying_signal"])
        if not said or said[-1] != fields:
            said.append(fields)
    return said


def is_subsequence(part: list[Any], whole: list[Any]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batches_decide_what_one_event_at_a_time_decides(
    db: Database, handlers: dict[str, Handler], context: ScorerContext, clock: ManualClock,
    seed: int,
) -> None:
    rng = random.Random(seed)
    leads = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(12)]
    twins = {lead_id: str(uuid.UUID(int=rng.getrandbits(128))) for lead_id in leads}
    events = interleaved(rng, [life(rng, lead_id, clock, rng.randint(3, 30))
                               for lead_id in leads])
    consumer: ScorerConsumer = consumer_for(db, handlers, context, clock)
    batch_counts: list[Counter[str]] = []
    offset = 0
    while offset < len(events):
        batch = events[offset:offset + rng.randint(1, 60)]
        for event in batch:  # one at a time, in a transaction each
            async with db.transaction() as session:
                await handlers[event.type](session, event)  # type: ignore[attr-defined]
        records = [record(renamed(event, twins[event.lead_id]), offset + number)
                   for number, event in enumerate(batch)]
        await consumer.apply({TopicPartition("test.leads", 0): records})
        assert consumer.dead_lettered == 0
        handled = Counter(event.lead_id for event in batch
                          if not isinstance(event, LeadReceived | LeadUpdated | SignalRecorded))
        batch_counts.append(handled)
        offset += len(batch)
        clock.advance(timedelta(hours=rng.uniform(0, 48)))

    everything = await published(db)
    for lead_id in leads:
        alone, together = everything.get(lead_id, []), everything.get(twins[lead_id], [])
        assert await state_of(db, twins[lead_id]) == await state_of(db, lead_id)
        moves = [item for item in alone if item[0] == "lead.stage_changed"]
        assert [item for item in together if item[0] == "lead.stage_changed"] == moves
        scored_alone = [item for item in alone if item[0] == "lead.scored"]
        scored_together = [item for item in together if item[0] == "lead.scored"]
        assert routing(scored_together)[-1:] == routing(scored_alone)[-1:]
        assert is_subsequence(routing(scored_together), routing(scored_alone))
    scored_per_lead = Counter(lead_id for lead_id in leads for item in everything.get(
        twins[lead_id], []) if item[0] == "lead.scored")
    # At most one per batch for each lead, and two more per event of the lead that a handler
    # applies on its own (its own, and one for the events after it in the batch).
    for lead_id in leads:
        assert scored_per_lead[lead_id] <= len(batch_counts) + 2 * sum(
            counts[lead_id] for counts in batch_counts
        )
    assert sum(scored_per_lead.values()) < sum(
        1 for lead_id in leads for item in everything.get(lead_id, []) if item[0] == "lead.scored"
    )


async def test_a_lead_that_became_mql_in_a_batch_stays_mql_when_the_batch_ends_lower(
    db: Database, handlers: dict[str, Handler], context: ScorerContext, clock: ManualClock,
) -> None:
    lead_id = str(uuid.uuid4())
    fit = LeadProfile(email="ada@acme.io", company="Acme", country="FR", employee_count=120)

    def signal(signal_id: str, signal_type: str) -> SignalRecorded:
        return SignalRecorded(producer="ingest", lead_id=lead_id, data=SignalRecordedData(
            signal_id=signal_id, signal_type=signal_type, signal_at=clock.now()))

    events: list[Envelope] = [
        LeadReceived(producer="ingest", lead_id=lead_id, data=LeadReceivedData(lead=fit)),
        signal("d1", "content_download"),
        signal("d2", "content_download"),  # 20 fit + 40: MQL here
        signal("u1", "unsubscribe"),  # 30: would not be MQL any more
    ]
    consumer = consumer_for(db, handlers, context, clock)
    await consumer.apply({TopicPartition("test.leads", 0): [
        record(event, offset) for offset, event in enumerate(events)
    ]})

    state = await state_of(db, lead_id)
    assert state["row"] is not None
    assert (state["row"]["stage"], state["row"]["score"]) == ("mql", 30.0)
    [moved] = state["history"]
    assert (moved["to_stage"], moved["cause"], moved["rule_ids"]) == (
        "mql", "signal", ["company-size-mid", "target-country", "content-download"]
    )
    kinds = [kind for kind, _ in (await published(db))[lead_id]]
    assert kinds == ["lead.stage_changed", "lead.scored"]
