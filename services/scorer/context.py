"""What the scorer's handlers, sweep and endpoints need beside a session (`ScorerContext`),
the scorer's metrics (`ScorerMetrics`) and the counting of what a transaction publishes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer.model_publishing import ScoringModels
from services.scorer.scoring_model import ScoringModel
from shared.clock import Clock
from shared.erasure import WalScrubber
from shared.events import LeadScored, LeadStageChanged
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics, count_after_commit
from shared.outbox import Outbox

PRODUCER = "scorer"


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
