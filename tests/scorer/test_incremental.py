"""A lead rescored from its stored tally plus its new signals ends exactly where a rescoring of
its whole history ends: the same row (score, temperature, breakdown and its reasons, stage,
next decay check, tally), the same stage history and the same events, to the last bit.

Generated leads, histories and new signals (every signal type of the default model, URLs that
the rules filter on, signals dated after the moment of scoring, more than the evidence limit,
several events of one lead at once), then on a real database: a signal the lead had already,
and a tally made stale by a write that did not carry one.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, update

from services.scorer import repository
from services.scorer.context import ScorerContext
from services.scorer.models import OUTBOX, lead_score, signal
from services.scorer.score_result import Signal
from services.scorer.scoring_model import load_scoring_model
from services.scorer.service import Rescored, Rescoring, rescore, rescore_all
from services.scorer.signal_tally import SignalTally
from shared.clock import ManualClock
from shared.db import Database
from shared.events import LeadProfile
from shared.metrics import ServiceMetrics
from shared.outbox import Outbox
from tests.scorer.conftest import TOPICS, Scorer
from tests.scorer.test_consumer import consumer_for, record
from tests.scorer.test_properties import URLS, profiles

MODEL = load_scoring_model()
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TYPES = [*sorted({rule.signal_type for rule in MODEL.signal_rules}), "custom:podcast"]
LEAD_ID = "0b5c1f7e-3a7d-4d0c-9a53-6c2f0e9a1d11"

signals = st.builds(
    Signal,
    signal_id=st.uuids().map(str),
    signal_type=st.sampled_from(TYPES),
    signal_at=st.integers(-48, 90 * 24).map(lambda hours: START - timedelta(hours=hours)),
    url=st.sampled_from(URLS),
)
many_opens = st.lists(
    st.builds(Signal, signal_id=st.uuids().map(str), signal_type=st.just("email_open"),
              signal_at=st.integers(0, 90 * 24).map(lambda hours: START - timedelta(hours=hours))),
    min_size=12, max_size=40,
)


def reference_tally(history: list[Signal]) -> dict[str, tuple[int, list[str], list[float]]]:
    """Each rule's tally read straight off the whole history, as the model's text says: how
    many signals it matched, the ids it quotes (newest first, at most 10, one for a rule that
    counts once), and the days of those it counts when it fades."""
    tallies = {}
    for rule in MODEL.signal_rules:
        matching = sorted(
            (item for item in history
             if item.signal_type == rule.signal_type and rule.accepts(item.url)),
            key=lambda item: (item.signal_at, item.signal_id), reverse=True,
        )
        if matching:
            counted = matching if rule.repeatable else matching[:1]
            days = sorted(item.day for item in counted) if rule.half_life_days else []
            tallies[rule.id] = (len(matching), [item.signal_id for item in counted[:10]], days)
    return tallies


def tally_in(row: dict[str, Any]) -> dict[str, tuple[int, list[str], list[float]]]:
    tally = SignalTally.stored(row, MODEL)
    assert tally is not None
    return {rule_id: (found.matched, found.evidence(), found.days)
            for rule_id, found in tally.rules.items()}


def context_at(moment: datetime) -> ScorerContext:
    outbox = Outbox(OUTBOX, topic=TOPICS.scores, shards=1)
    return ScorerContext.build(outbox, ManualClock(moment), MODEL, ServiceMetrics("scorer"))


def stored(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the database gives it back: its tally through JSON."""
    return {**row, "signal_tally": json.loads(json.dumps(row["signal_tally"]))}


def outcome(done: Rescored) -> tuple[Any, ...]:
    events = [(event.type, event.data.model_dump(mode="json")) for event in done.events]
    return done.outcome, done.row, done.history, events


def both_ways(
    profile: LeadProfile, history: list[Signal], new: list[Signal], steps: int,
    later: timedelta,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Rescore after `new` (in `steps` events) from the whole history, and from the tally."""
    context = context_at(START)
    before = stored(rescore(context, LEAD_ID, None, profile, history, now=START,
                            cause="profile").row)
    now = START + later
    cut = [len(new) * number // steps for number in range(1, steps + 1)]
    everything = [*history, *new]

    def events(signals: list[Signal], offset: int) -> list[Rescoring]:
        return [Rescoring(profile, signals, now + timedelta(seconds=number), "signal",
                          active=True, seen=offset + seen)
                for number, seen in enumerate(cut)]

    full = rescore_all(context, LEAD_ID, before, events(everything, len(history)))
    tally = SignalTally.stored(before, MODEL)
    assert tally is not None
    incremental = rescore_all(context, LEAD_ID, before, events(new, 0), tally=tally)
    assert tally_in(stored(incremental.row)) == reference_tally(everything)
    return outcome(full), outcome(incremental)


@settings(max_examples=400, deadline=None)
@given(
    profile=profiles,
    history=st.lists(signals, max_size=25, unique_by=lambda item: item.signal_id),
    new=st.lists(signals, min_size=1, max_size=8, unique_by=lambda item: item.signal_id),
    steps=st.integers(1, 4),
    later=st.integers(0, 60 * 24).map(lambda hours: timedelta(hours=hours)),
)
def test_new_signals_on_the_tally_score_as_the_whole_history_does(
    profile: LeadProfile, history: list[Signal], new: list[Signal], steps: int,
    later: timedelta,
) -> None:
    new = [item for item in new if item.signal_id not in {old.signal_id for old in history}]
    if not new:
        return
    full, incremental = both_ways(profile, history, new, min(steps, len(new)), later)
    assert incremental == full


@settings(max_examples=60, deadline=None)
@given(profile=profiles, opens=many_opens, new=many_opens,
       later=st.integers(0, 30 * 24).map(lambda hours: timedelta(hours=hours)))
def test_beyond_the_evidence_limit_too(
    profile: LeadProfile, opens: list[Signal], new: list[Signal], later: timedelta
) -> None:
    full, incremental = both_ways(profile, opens, new[:5], 2, later)
    assert incremental == full



def test_a_tally_stored_with_more_evidence_scores_as_the_whole_history() -> None:
    """Rows written when a line quoted 50 signals: their tally is cut to the newest ones."""
    opens = [Signal(f"open-{number:02d}", "email_open", START - timedelta(hours=number))
             for number in range(60)]
    context = context_at(START)
    row = stored(rescore(context, LEAD_ID, None, LeadProfile(email="ada@acme.io"), opens,
                         now=START, cause="profile").row)
    older = sorted(([int(signal.signal_at.timestamp() * 1_000_000), signal.signal_id]
                    for signal in opens), reverse=True)[:50]
    row["signal_tally"]["rules"]["email-open"][1] = sorted(older)
    assert len(row["signal_tally"]["rules"]["email-open"][1]) == 50
    tally = SignalTally.stored(row, MODEL)
    assert tally is not None
    assert tally.rules["email-open"].evidence() == [f"open-{number:02d}" for number in range(10)]
    new = [Signal("open-new", "email_open", START)]
    later = START + timedelta(minutes=1)
    from_tally = rescore_all(context, LEAD_ID, row, [
        Rescoring(LeadProfile(email="ada@acme.io"), new, later, "signal", active=True)
    ], tally=tally)
    from_history = rescore(context, LEAD_ID, row, LeadProfile(email="ada@acme.io"),
                           [*opens, *new], now=later, cause="signal", active=True)
    assert from_tally.row["breakdown"] == from_history.row["breakdown"]
    evidence = from_tally.row["breakdown"][-1]["evidence"]
    assert evidence[0] == "open-new" and len(evidence) == 10

def test_a_tally_of_another_model_or_row_is_not_used() -> None:
    context = context_at(START)
    row = stored(rescore(context, LEAD_ID, None, LeadProfile(email="ada@acme.io"),
                         [], now=START, cause="profile").row)
    assert SignalTally.stored(row, MODEL) is not None
    other = MODEL.model_copy(update={"version": "other"})
    assert SignalTally.stored(row, other) is None
    moved = {**row, "updated_at": row["updated_at"] + timedelta(microseconds=1)}
    assert SignalTally.stored(moved, MODEL) is None
    assert SignalTally.stored({**row, "signal_tally": None}, MODEL) is None


async def apply_batch(scorer: Scorer, context: ScorerContext, offset: int, *events: Any) -> None:
    consumer = consumer_for(scorer.db, scorer.handlers, context, scorer.clock)
    await consumer.apply({
        TopicPartition(TOPICS.leads, 0): [record(event, offset + number)
                                          for number, event in enumerate(events)]
    })
    assert consumer.dead_lettered == 0


@pytest.fixture
def twin(db: Database, scorer: Scorer) -> Scorer:
    """A second lead of the same life, applied one event at a time (the whole history)."""
    return Scorer(db, scorer.handlers, scorer.clock, lead_id="5e0d3c1a-9b8f-4e6d-a2c4-1f3b5d7e9a20")


async def test_a_signal_the_lead_had_already_counts_once_in_a_batch(
    scorer: Scorer, twin: Scorer, context: ScorerContext
) -> None:
    opened = [scorer.signal("email_open", signal_id=f"open-{n}") for n in range(3)]
    await apply_batch(scorer, context, 0, scorer.received(), *opened[:2])
    before = dict(await scorer.stored())
    scorer.clock.advance(timedelta(minutes=5))
    # The same signal again in another event (a retried batch upstream): nothing happens.
    resent = opened[1].model_copy(update={"event_id": uuid.uuid4()})
    await apply_batch(scorer, context, 10, resent)
    assert dict(await scorer.stored()) == before
    await apply_batch(scorer, context, 20, resent.model_copy(update={"event_id": uuid.uuid4()}),
                      opened[2])
    await twin.apply(twin.received(), *[item.model_copy(update={"lead_id": twin.lead_id})
                                        for item in opened])
    mine, theirs = dict(await scorer.stored()), dict(await twin.stored())
    assert mine["signal_tally"]["rules"]["email-open"][0] == 3
    for name in ("score", "engagement", "temperature", "breakdown", "signal_tally"):
        assert mine[name] == theirs[name], name


async def test_a_stale_tally_has_the_whole_history_read_again(
    db: Database, scorer: Scorer, context: ScorerContext, clock: ManualClock
) -> None:
    await apply_batch(scorer, context, 0, scorer.received(),
                      scorer.signal("email_open", signal_id="open-1"))
    # What a scorer that keeps no tally would do: store a signal and rewrite the row.
    async with db.transaction() as session:
        await session.execute(insert(signal).values(
            lead_id=scorer.lead_id, signal_id="open-2", signal_type="email_open",
            signal_at=clock.now(), url=None, source=None, properties={}, recorded_at=clock.now(),
        ))
        await session.execute(update(lead_score).where(lead_score.c.lead_id == scorer.lead_id)
                              .values(updated_at=clock.now() + timedelta(seconds=1)))
    clock.advance(timedelta(seconds=5))
    await apply_batch(scorer, context, 10, scorer.signal("email_open", signal_id="open-3"))
    row = await scorer.stored()
    assert row["signal_tally"]["rules"]["email-open"][0] == 3
    assert row["engagement"] == 30.0



async def test_a_model_published_while_a_batch_is_applied_has_it_applied_one_by_one_under_it(
    scorer: Scorer, context: ScorerContext, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model refresh swaps the model in force between the batch's read and its decision:
    the tally read is of the old model (`StaleTallyError`), so the batch is rolled back and
    applied one event at a time, each lead scored from its whole history under the new model."""
    await apply_batch(scorer, context, 0, scorer.received(),
                      scorer.signal("email_open", signal_id="open-1"))
    newer = context.models.current.model_copy(update={"version": "published-meanwhile"})
    read_leads = repository.find_scores_for_update

    async def read_then_publish(*args: Any, **kwargs: Any) -> Any:
        rows = await read_leads(*args, **kwargs)
        context.models.current = newer
        return rows

    monkeypatch.setattr(repository, "find_scores_for_update", read_then_publish)
    await apply_batch(scorer, context, 10, scorer.signal("email_open", signal_id="open-2"),
                      scorer.signal("email_open", signal_id="open-3"))
    assert "batch fast path failed (StaleTallyError)" in caplog.text
    row = await scorer.stored()
    assert row["model_version"] == newer.version
    assert row["signal_tally"]["model_version"] == newer.version
    assert row["signal_tally"]["rules"]["email-open"][0] == 3
