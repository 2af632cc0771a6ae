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

The context is in `services.scorer.context`; moving a lead's stage on request is
`services.scorer.stage_moves`, erasure `services.scorer.erasure`, sales feedback
`services.scorer.rejections`, the scoring model in force `services.scorer.model_publishing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.context import PRODUCER, ScorerContext, count_published
from services.scorer.lead_scorer import LeadScorer
from services.scorer.lifecycle import model_makes_mql
from services.scorer.score_result import ScoreResult, Signal
from services.scorer.scoring import next_change_of
from services.scorer.signal_tally import SignalTally
from services.scorer.stage_moves import stage_transition
from shared.events import (
    LeadProfile,
    LeadScored,
    LeadScoredData,
    LeadStageChanged,
    SignalRecordedData,
    Stage,
)

Row = Mapping[str, Any] | RowMapping
"""A lead's row, as read from the database or as kept in memory."""

ScoreOutcome = Literal["scored", "rescored", "unchanged", "erased", "waiting"]


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
    profile_kept: bool = False
    """Only signals rescored the lead: its profile and `received_at` are as stored."""


@dataclass(frozen=True)
class Rescoring:
    """One event that has the lead rescored, and the lead as that event leaves it."""

    profile: LeadProfile
    signals: Sequence[Signal]
    """The lead's whole history, or the signals added to its stored tally (`rescore_all`)."""
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


class StaleTallyError(RuntimeError):
    """A stored tally was read under another scoring model than the one now in force."""


def rescore_all(
    context: ScorerContext,
    lead_id: str,
    current: Row | None,
    steps: Sequence[Rescoring],
    *,
    tally: SignalTally | None = None,
) -> Rescored:
    """`rescore` after several events of one lead at once, publishing only where they lead.

    The stage moves exactly as it would one event at a time: at each event the model may make
    the lead MQL, and the transition is kept and published with that event's rules, time and
    cause. The score itself is computed in full (breakdown, next decay check) for the last
    event only, and `lead.scored` is published once, with that final state, when it differs
    from `current` or the stage moved: the states in between are superseded before anyone
    could act on them.

    The steps' signals are one list each step sees more of (`Rescoring.seen`). With `tally`
    (the lead's stored tally under the model in force, `SignalTally.stored`), they are the
    signals the lead got since, none of them already in it; without, its whole history. The
    row keeps the tally they lead to.
    """
    model = context.models.current
    if tally is not None and tally.model_version != model.version:
        raise StaleTallyError(f"lead {lead_id}: tally of model {tally.model_version}")
    running = tally.copy() if tally is not None else SignalTally(model.version)
    tallied = 0

    def scorer_at(step: Rescoring) -> LeadScorer:
        nonlocal tallied
        then = step.signals_then()
        running.add(model, then[tallied:])
        tallied = len(then)
        return LeadScorer(step.profile, running, model)
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
        entry, changed = stage_transition(
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
        if model_makes_mql(stage, mql=True, fresh_activity=fresh()):
            scorer = scorer_at(step)
            if scorer.mql_at(step.now):
                move_to_mql(step, scorer.at(step.now))
    last = steps[-1]
    started = time.perf_counter()
    scorer = scorer_at(last)
    result = scorer.at(last.now)
    next_check_at = next_change_of(scorer, last.now, current=result.temperature)
    context.metrics.scoring_seconds.observe(time.perf_counter() - started)
    if last.active:
        active_at = last.now
    if model_makes_mql(stage, mql=result.mql, fresh_activity=fresh()):
        move_to_mql(last, result)
    row: dict[str, Any] = dict(current) if current is not None else {
        "lead_id": lead_id, "erased_at": None, "scored_at": last.now,
    }
    profile_kept = current is not None and all(step.cause == "signal" for step in steps)
    row.update(
        profile=current["profile"] if current is not None and profile_kept
        else last.profile.model_dump(mode="json"),
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
        signal_tally=running.stored_form(last.now),
    )
    if current is not None and not events and _same_score(current, row):
        return Rescored("unchanged", row, False, history, events, last.cause, profile_kept)
    if current is not None and not events and _engagement_only(current, row, steps):
        return Rescored("rescored", row, False, history, events, last.cause, profile_kept)
    row["scored_at"] = last.now
    events.append(_scored_event(
        lead_id, last.profile, result, stage, last.correlation_id, last.now, received_at
    ))
    return Rescored("scored" if current is None else "rescored", row, current is None,
                    history, events, last.cause, profile_kept)


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
    for profile_kept in (False, True):
        await repository.update_scores(session, [
            done.row for done in rescored if not done.is_new and done.profile_kept == profile_kept
        ], scores_only=profile_kept)
    await repository.insert_stage_changes(
        session, [entry for done in rescored for entry in done.history]
    )
    for done in rescored:
        count_published(session, context, done.cause, done.events)
    await context.outbox.add(session, *(event for done in rescored for event in done.events))


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
