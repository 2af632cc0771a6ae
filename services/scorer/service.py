"""scorer's business logic: keep each lead's score and stage, publish what changed.

Functions here take the caller's session and never commit: the consumer loop, the sweep or the
HTTP endpoint owns the transaction, so the stored score, the history, the outbox events and the
processed-event record commit together or not at all.

`lead.scored` is published the first time a lead is scored and then whenever its temperature,
its stage, or what counts towards its score (the rules that matched, their raw points and
evidence) changes, except when signals change only the engagement points (same temperature,
stage and buying signal): that score is stored, not published. Decay alone moves the stored
total without publishing; when it moves the lead to another temperature band, the sweep
publishes that crossing, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.lifecycle import model_makes_mql, next_stage
from services.scorer.models import AUDIT, INBOX
from services.scorer.scoring import (
    ScoreResult,
    Signal,
    makes_mql,
    score,
    score_and_next_change,
)
from services.scorer.scoring_model import ScoringModel, parse_scoring_model
from shared import audit
from shared.clock import Clock
from shared.db import Database
from shared.erasure import WalScrubber, erase_delivery_records
from shared.events import (
    LeadErased,
    LeadErasedData,
    LeadProfile,
    LeadScored,
    LeadScoredData,
    LeadStageChanged,
    LeadStageChangedData,
    ScoreLine,
    SignalRecordedData,
    Stage,
)
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics, count_after_commit
from shared.outages import OutageLog, is_outage
from shared.outbox import Outbox
from shared.problems import ProblemError

PRODUCER = "scorer"
UNKNOWN_SOURCE = "unknown"

Row = Mapping[str, Any] | RowMapping
"""A lead's row, as read from the database or as kept in memory."""

ScoreOutcome = Literal["scored", "rescored", "unchanged", "erased", "waiting"]


class ScoringModels:
    """The scoring model in force, cached in memory and refreshed from the database.

    At start the model file is published unless its version already was (an operator who
    edits the file and changes its version gets it in force; a version published since through
    the API is not overridden by a restart). Every instance then re-reads the model in force
    every `refresh_seconds`, so a `PUT` on one instance reaches the others that quickly.
    """

    def __init__(self, file_model: ScoringModel, *, refresh_seconds: float = 5.0) -> None:
        self.file_model = file_model
        self.current = file_model
        self.refresh_seconds = refresh_seconds

    async def install(self, session: AsyncSession, now: datetime) -> None:
        """Publish the file's model if its version is new; then use the one in force."""
        await repository.insert_model_unless_published(
            session, _model_row(self.file_model, "file", now)
        )
        await self.refresh(session)

    async def refresh(self, session: AsyncSession) -> None:
        row = await repository.current_model(session)
        if row is not None and row["version"] != self.current.version:
            self.current = parse_scoring_model(row["document"])

    async def run(self, db: Database, clock: Clock) -> None:
        """The `scoring-model` loop: install at start, then refresh now and then."""
        async with db.transaction() as session:
            await self.install(session, clock.now())
        outage = OutageLog("scoring model refresh")
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                async with db.reading() as session:
                    await self.refresh(session)
            except Exception as error:
                if not is_outage(error):
                    raise
                outage.failed(error)
                continue
            outage.recovered()


@dataclass(frozen=True)
class ScorerMetrics:
    """The scorer's own metrics; labels carry causes, stages and temperatures, never a lead."""

    scoring_seconds: Histogram
    leads_scored: Counter
    stage_changes: Counter
    stage_changes_refused: Counter

    @classmethod
    def register(cls, metrics: ServiceMetrics) -> ScorerMetrics:
        return cls(
            scoring_seconds=metrics.histogram(
                "scorer_scoring_seconds", "Time to score one lead against the model", [],
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            ),
            leads_scored=metrics.counter(
                "scorer_leads_scored_total", "lead.scored events published",
                ["cause", "temperature"],
            ),
            stage_changes=metrics.counter(
                "scorer_stage_changes_total", "Lifecycle transitions", ["from_stage", "to_stage"]
            ),
            stage_changes_refused=metrics.counter(
                "scorer_stage_changes_refused_total",
                "Events asking for a transition the lifecycle does not allow", ["cause"],
            ),
        )


@dataclass(frozen=True)
class ScorerContext:
    """What the handlers, the sweep and the endpoints need beside a session."""

    outbox: Outbox
    clock: Clock
    models: ScoringModels
    metrics: ScorerMetrics
    keyring: KeyRing | None = None
    """The leads' data keys (dropped at their erasure)."""
    scrubber: WalScrubber | None = None
    """Empties SQLite's write-ahead log after an erasure."""

    @classmethod
    def build(
        cls, outbox: Outbox, clock: Clock, model: ScoringModel, metrics: ServiceMetrics,
        *, refresh_seconds: float = 5.0, keyring: KeyRing | None = None,
        scrubber: WalScrubber | None = None,
    ) -> ScorerContext:
        return cls(
            outbox, clock, ScoringModels(model, refresh_seconds=refresh_seconds),
            ScorerMetrics.register(metrics), keyring, scrubber,
        )


# Scoring


async def score_profile(
    session: AsyncSession,
    context: ScorerContext,
    *,
    lead_id: str,
    profile: LeadProfile,
    correlation_id: str | None = None,
    received_at: datetime | None = None,
) -> ScoreOutcome:
    """A lead was received or updated: store its profile and rescore it.

    `received_at`: when ingest received the lead (a `lead.received`); kept from the first.
    """
    now = context.clock.now()
    current = await repository.find_score_for_update(session, lead_id)
    if current is not None and current["erased_at"] is not None:
        return "erased"
    return await _rescore(
        session, context, lead_id, current, profile, now=now, cause="profile",
        correlation_id=correlation_id, received_at=received_at,
    )


async def record_signal(
    session: AsyncSession,
    context: ScorerContext,
    *,
    lead_id: str,
    data: SignalRecordedData,
    correlation_id: str | None = None,
) -> ScoreOutcome:
    """Keep the signal (once per id) and rescore the lead with it.

    A signal of a lead not received yet is kept and counts when the lead arrives.
    """
    now = context.clock.now()
    current = await repository.find_score_for_update(session, lead_id)
    if current is not None and current["erased_at"] is not None:
        return "erased"
    stored = await repository.insert_signal(session, signal_row(lead_id, data, now))
    if not stored:
        return "unchanged"
    if current is None:
        return "waiting"
    profile = LeadProfile.model_validate(current["profile"])
    return await _rescore(
        session, context, lead_id, current, profile, now=now, cause="signal",
        correlation_id=correlation_id, active=True,
    )


async def rescore_due(session: AsyncSession, context: ScorerContext, *, limit: int) -> int:
    """The sweep: rescore leads whose `next_check_at` has come; returns how many were looked at.

    Rows are claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances sweep
    different leads; a claimed lead gets a new `next_check_at`, so it is not claimed again
    until decay may change it again.
    """
    now = context.clock.now()
    due = await repository.claim_due_scores(session, now, limit)
    signals = await repository.signals_of_leads(session, [row["lead_id"] for row in due])
    await write_rescored(session, context, [
        rescore(
            context, row["lead_id"], row, LeadProfile.model_validate(row["profile"]),
            [signal_of(item) for item in signals[row["lead_id"]]], now=now, cause="decay",
        )
        for row in due
    ])
    return len(due)


@dataclass
class Rescored:
    """What rescoring a lead decided: its whole row afterwards, and what to record and publish."""

    outcome: ScoreOutcome
    row: dict[str, Any]
    is_new: bool
    history: list[dict[str, Any]]
    events: list[LeadScored | LeadStageChanged]
    cause: str
    """What had the lead rescored last (`Rescoring.cause`)."""


@dataclass(frozen=True)
class Rescoring:
    """One event that has the lead rescored, and the lead as that event leaves it."""

    profile: LeadProfile
    signals: Sequence[Signal]
    now: datetime
    cause: str
    correlation_id: str | None = None
    active: bool = False
    """A signal: the lead showed activity at `now` (a recycled lead may become MQL again)."""
    seen: int | None = None
    """How many of `signals` the lead had at this event (None: all of them); lets several
    events of one lead share one growing list."""
    received_at: datetime | None = None
    """A `lead.received`: when ingest received the lead (the lead keeps the first one)."""

    def signals_then(self) -> Sequence[Signal]:
        return self.signals if self.seen is None else self.signals[: self.seen]


def rescore(
    context: ScorerContext,
    lead_id: str,
    current: Row | None,
    profile: LeadProfile,
    signals: Sequence[Signal],
    *,
    now: datetime,
    cause: str,
    correlation_id: str | None = None,
    active: bool = False,
    received_at: datetime | None = None,
) -> Rescored:
    """Score the lead and decide its stage; no I/O (the caller reads and writes the rows).

    The model may make the lead MQL (kept in the history with the rules that made it so);
    `lead.scored` is published for a new lead and whenever `_same_score` says it changed.
    """
    return rescore_all(context, lead_id, current, [
        Rescoring(profile, signals, now, cause, correlation_id, active, received_at=received_at)
    ])


def rescore_all(
    context: ScorerContext, lead_id: str, current: Row | None, steps: Sequence[Rescoring]
) -> Rescored:
    """`rescore` after several events of one lead at once, publishing only where they lead.

    The stage moves exactly as it would one event at a time: at each event the model may make
    the lead MQL, and the transition is kept and published with that event's rules, time and
    cause. The score itself is computed in full (breakdown, next decay check) for the last
    event only, and `lead.scored` is published once, with that final state, when it differs
    from `current` or the stage moved: the states in between are superseded before anyone
    could act on them.
    """
    model = context.models.current
    stage: Stage = current["stage"] if current is not None else "lead"
    active_at: datetime | None = current["active_at"] if current is not None else None
    changed_at: datetime | None = current["stage_changed_at"] if current is not None else None
    received_at: datetime | None = current["received_at"] if current is not None else None
    for step in steps:
        received_at = received_at or step.received_at
    history: list[dict[str, Any]] = []
    events: list[LeadScored | LeadStageChanged] = []

    def move_to_mql(step: Rescoring, result: ScoreResult) -> None:
        nonlocal stage, changed_at
        reason = "buying_signal" if result.buying_signal else "mql_rule"
        entry, changed = _transition(
            lead_id, stage, "mql", reason=reason, cause=step.cause, now=step.now,
            correlation_id=step.correlation_id, rule_ids=list(result.contributing_rules),
        )
        history.append(entry)
        events.append(changed)
        stage, changed_at = "mql", step.now

    def fresh() -> bool:
        return active_at is not None and (changed_at is None or active_at > changed_at)

    for step in steps[:-1]:
        if step.active:
            active_at = step.now
        if model_makes_mql(stage, mql=True, fresh_activity=fresh()) and makes_mql(
            step.profile, step.signals_then(), model, step.now
        ):
            move_to_mql(step, score(step.profile, step.signals_then(), model, step.now))
    last = steps[-1]
    started = time.perf_counter()
    result, next_check_at = score_and_next_change(
        last.profile, last.signals_then(), model, last.now
    )
    context.metrics.scoring_seconds.observe(time.perf_counter() - started)
    if last.active:
        active_at = last.now
    if model_makes_mql(stage, mql=result.mql, fresh_activity=fresh()):
        move_to_mql(last, result)
    row: dict[str, Any] = dict(current) if current is not None else {
        "lead_id": lead_id, "erased_at": None, "scored_at": last.now,
    }
    row.update(
        profile=last.profile.model_dump(mode="json"),
        score=result.total,
        fit=result.fit,
        engagement=result.engagement,
        temperature=result.temperature,
        model_version=result.model_version,
        breakdown=result.breakdown_json(),
        buying_signal=result.buying_signal,
        stage=stage,
        stage_changed_at=changed_at,
        active_at=active_at,
        next_check_at=next_check_at,
        updated_at=last.now,
        received_at=received_at,
    )
    if current is not None and not events and _same_score(current, row):
        return Rescored("unchanged", row, False, history, events, last.cause)
    if current is not None and not events and _engagement_only(current, row, steps):
        return Rescored("rescored", row, False, history, events, last.cause)
    row["scored_at"] = last.now
    events.append(_scored_event(
        lead_id, last.profile, result, stage, last.correlation_id, last.now, received_at
    ))
    return Rescored("scored" if current is None else "rescored", row, current is None,
                    history, events, last.cause)


async def _rescore(
    session: AsyncSession,
    context: ScorerContext,
    lead_id: str,
    current: RowMapping | None,
    profile: LeadProfile,
    *,
    now: datetime,
    cause: str,
    correlation_id: str | None = None,
    active: bool = False,
    signals: Sequence[Signal] | None = None,
    received_at: datetime | None = None,
) -> ScoreOutcome:
    if signals is None:
        signals = [signal_of(row) for row in await repository.signals_of(session, lead_id)]
    done = rescore(
        context, lead_id, current, profile, signals, now=now, cause=cause,
        correlation_id=correlation_id, active=active, received_at=received_at,
    )
    await write_rescored(session, context, [done])
    return done.outcome


async def write_rescored(
    session: AsyncSession, context: ScorerContext, rescored: Sequence[Rescored]
) -> None:
    """Write what `rescore` decided for one or more leads, in a few statements."""
    await repository.insert_scores(session, [done.row for done in rescored if done.is_new])
    await repository.update_scores(session, [done.row for done in rescored if not done.is_new])
    await repository.insert_stage_changes(
        session, [entry for done in rescored for entry in done.history]
    )
    for done in rescored:
        count_published(session, context, done.cause, done.events)
    await context.outbox.add(session, *(event for done in rescored for event in done.events))


def count_published(
    session: AsyncSession, context: ScorerContext, cause: str,
    events: Sequence[LeadScored | LeadStageChanged],
) -> None:
    """Count the scores and stage changes `events` publish, once the transaction commits."""
    for event in events:
        if isinstance(event, LeadScored):
            counter = context.metrics.leads_scored.labels(cause, event.data.temperature)
        else:
            counter = context.metrics.stage_changes.labels(event.data.from_stage,
                                                           event.data.to_stage)
        count_after_commit(session, counter)


def _same_score(stored: Row, fresh: Row) -> bool:
    """Whether nothing worth telling changed: temperature, and what counts (not decay)."""
    return (
        stored["temperature"] == fresh["temperature"]
        and _substance(stored["breakdown"]) == _substance(fresh["breakdown"])
    )


def _engagement_only(stored: Row, fresh: Row, steps: Sequence[Rescoring]) -> bool:
    """Whether signals moved only the engagement points: same temperature, stage and buying
    signal. The new score is stored (the API shows it) but not published: nothing the router
    decides on changed, and a campaign would otherwise send it one score per email open."""
    return (
        all(step.cause == "signal" for step in steps)
        and stored["temperature"] == fresh["temperature"]
        and stored["stage"] == fresh["stage"]
        and stored["buying_signal"] == fresh["buying_signal"]
    )


def _substance(breakdown: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (line["rule_id"], line.get("raw_points"), tuple(line.get("evidence") or ()))
        for line in breakdown
    ]


def signal_row(lead_id: str, data: SignalRecordedData, now: datetime) -> dict[str, Any]:
    """The stored form of a signal."""
    return {
        "lead_id": lead_id,
        "signal_id": data.signal_id,
        "signal_type": data.signal_type,
        "signal_at": data.signal_at,
        "url": data.url,
        "source": data.source,
        "properties": data.properties,
        "recorded_at": now,
    }


def signal_of(row: Row) -> Signal:
    return Signal(
        signal_id=row["signal_id"], signal_type=row["signal_type"], signal_at=row["signal_at"],
        url=row["url"],
    )


def _scored_event(
    lead_id: str,
    profile: LeadProfile,
    result: ScoreResult,
    stage: Stage,
    correlation_id: str | None,
    occurred_at: datetime,
    received_at: datetime | None,
) -> LeadScored:
    return LeadScored(
        producer=PRODUCER,
        lead_id=lead_id,
        correlation_id=correlation_id,
        occurred_at=occurred_at,
        data=LeadScoredData(
            score=result.total,
            fit=result.fit,
            engagement=result.engagement,
            temperature=result.temperature,
            model_version=result.model_version,
            breakdown=list(result.breakdown),
            lead=profile,
            stage=stage,
            buying_signal=result.buying_signal,
            received_at=received_at,
        ),
    )


# Lifecycle


@dataclass(frozen=True)
class StageMove:
    """What a request to change a lead's stage did: `moved` is False when it was there already."""

    lead_id: str
    stage: Stage
    moved: bool


async def move_stage(
    session: AsyncSession,
    context: ScorerContext,
    lead_id: str,
    wanted: Stage,
    *,
    reason: str | None,
    cause: str,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
) -> StageMove | None:
    """Move the lead to `wanted`; publish `lead.stage_changed`, then `lead.scored` with the stage.

    None when the scorer does not know the lead (or it was erased). Raises
    `IllegalTransitionError` when the state machine refuses the move; moving a lead to the
    stage it is in does nothing.
    """
    now = context.clock.now()
    current = await repository.find_score_for_update(session, lead_id)
    if current is None or current["erased_at"] is not None:
        return None
    stage: Stage = current["stage"]
    target = next_stage(stage, wanted)
    if target is None:
        return StageMove(lead_id, stage, moved=False)
    changed = await _record_transition(
        session, lead_id, stage, target, reason=reason, cause=cause, now=now,
        cause_event_id=cause_event_id, correlation_id=correlation_id,
    )
    await repository.update_score(
        session, lead_id,
        {"stage": target, "stage_changed_at": now, "scored_at": now, "updated_at": now},
    )
    published: list[LeadScored | LeadStageChanged] = [
        changed, _rescored_with_stage(current, target, now, correlation_id)
    ]
    count_published(session, context, cause, published)
    await context.outbox.add(session, *published)
    return StageMove(lead_id, target, moved=True)


async def _record_transition(
    session: AsyncSession,
    lead_id: str,
    from_stage: Stage,
    to_stage: Stage,
    *,
    reason: str | None,
    cause: str,
    now: datetime,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
) -> LeadStageChanged:
    entry, event = _transition(
        lead_id, from_stage, to_stage, reason=reason, cause=cause, now=now,
        cause_event_id=cause_event_id, correlation_id=correlation_id,
    )
    await repository.insert_stage_changes(session, [entry])
    return event


def _transition(
    lead_id: str,
    from_stage: Stage,
    to_stage: Stage,
    *,
    reason: str | None,
    cause: str,
    now: datetime,
    cause_event_id: str | None = None,
    correlation_id: str | None = None,
    rule_ids: list[str] | None = None,
) -> tuple[dict[str, Any], LeadStageChanged]:
    """The history row and the event of one transition."""
    entry = {
        "lead_id": lead_id,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "reason": reason,
        "cause": cause,
        "cause_event_id": cause_event_id,
        "rule_ids": rule_ids,
        "changed_at": now,
    }
    event = LeadStageChanged(
        producer=PRODUCER,
        lead_id=lead_id,
        correlation_id=correlation_id,
        occurred_at=now,
        data=LeadStageChangedData(
            from_stage=from_stage, to_stage=to_stage, reason=reason,
            cause_event_id=cause_event_id,
        ),
    )
    return entry, event


def _rescored_with_stage(
    row: RowMapping, stage: Stage, now: datetime, correlation_id: str | None
) -> LeadScored:
    return LeadScored(
        producer=PRODUCER,
        lead_id=row["lead_id"],
        correlation_id=correlation_id,
        occurred_at=now,
        data=LeadScoredData(
            score=row["score"],
            fit=row["fit"],
            engagement=row["engagement"],
            temperature=row["temperature"],
            model_version=row["model_version"],
            breakdown=[ScoreLine.model_validate(line) for line in row["breakdown"]],
            lead=LeadProfile.model_validate(row["profile"]),
            stage=stage,
            buying_signal=row["buying_signal"],
            received_at=row["received_at"],
        ),
    )


# Sales feedback and erasure


async def record_rejection(
    session: AsyncSession,
    context: ScorerContext,
    lead_id: str,
    *,
    assignment_id: str,
    outcome: Literal["rejected", "disqualified"],
    reason_code: str,
) -> None:
    """Keep an SDR's rejection or disqualification for the feedback report."""
    current = await repository.find_score(session, lead_id)
    source = UNKNOWN_SOURCE
    if current is not None and current["erased_at"] is None:
        source = current["profile"].get("source") or UNKNOWN_SOURCE
    await repository.insert_rejection(
        session,
        {
            "lead_id": lead_id,
            "assignment_id": assignment_id,
            "outcome": outcome,
            "reason_code": reason_code,
            "lead_source": source[:100],
            "recorded_at": context.clock.now(),
        },
        await repository.last_mql_rules(session, lead_id),
    )


async def erase_lead(
    session: AsyncSession, context: ScorerContext, lead_id: str, *,
    correlation_id: str | None = None,
) -> None:
    """Forget the lead's personal data and signals; keep a tombstone so later events are ignored.

    The stage history and the feedback records stay: they hold ids, stages, rule ids and
    reason codes, no personal data. Its published outbox rows and dead letters go, and its
    data key leaves the memory. `lead.erased` goes on to the scores topic, after every
    `lead.scored` of the lead: the router, which reads only that topic, erases its copy
    knowing no earlier score of the lead is still on its way.
    """
    now = context.clock.now()
    await repository.delete_signals(session, lead_id)
    await erase_delivery_records(session, lead_id, outbox=context.outbox.tables, inbox=INBOX)
    if context.keyring is not None:
        context.keyring.forget(lead_id)
    if context.scrubber is not None:
        context.scrubber.after_commit(session)
    tombstone: dict[str, Any] = {
        "profile": {},
        "breakdown": [],
        "score": 0.0,
        "fit": 0.0,
        "engagement": 0.0,
        "buying_signal": False,
        "active_at": None,
        "next_check_at": None,
        "erased_at": now,
        "updated_at": now,
    }
    current = await repository.find_score_for_update(session, lead_id)
    if current is None:
        await repository.insert_score(
            session,
            {**tombstone, "lead_id": lead_id, "temperature": "cold", "model_version": "",
             "scored_at": now},
        )
    else:
        await repository.update_score(session, lead_id, tombstone)
    await context.outbox.add(session, LeadErased(
        producer=PRODUCER, lead_id=lead_id, correlation_id=correlation_id, occurred_at=now,
        data=LeadErasedData(),
    ))


# Scoring models


async def publish_model(
    session: AsyncSession, context: ScorerContext, model: ScoringModel
) -> None:
    """Put `model` in force; every lead is rescored against it by the sweep."""
    if await repository.find_model(session, model.version) is not None:
        raise ProblemError(
            409, "Version already published",
            f"A scoring model with version {model.version!r} was published before; "
            "give this one a new version.",
            slug="model-version-taken",
        )
    now = context.clock.now()
    current = await repository.current_model(session)
    await repository.insert_model(session, _model_row(model, "api", now))
    await repository.recheck_all_scores(session, now)
    await audit.record(session, AUDIT, at=now, action="scoring_model.published",
                       subject="scoring-model",
                       before=None if current is None else dict(current["document"]),
                       after=model.document())


def parse_model_document(document: Any) -> ScoringModel:
    """Validate a scoring model sent to the API; a 422 problem lists every mistake."""
    try:
        return parse_scoring_model(document)
    except ValidationError as error:
        raise ProblemError(
            422, "Invalid scoring model",
            f"The scoring model has {error.error_count()} error(s); nothing was published.",
            slug="invalid-scoring-model",
            errors=[
                {
                    "field": ".".join(str(part) for part in item["loc"]) or "document",
                    "in": "body",
                    "message": item["msg"],
                }
                for item in error.errors(include_url=False)
            ],
        ) from None


def _model_row(model: ScoringModel, source: str, now: datetime) -> dict[str, Any]:
    return {
        "version": model.version,
        "document": model.document(),
        "source": source,
        "published_at": now,
    }
