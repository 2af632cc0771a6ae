"""scorer's application factory: `uvicorn services.scorer.app:create_app --factory`."""

from __future__ import annotations

from functools import partial

from fastapi import Depends, FastAPI

import services.scorer
from services.scorer import api, funnel_api, model_replay
from services.scorer.consumer import ScorerConsumer
from services.scorer.context import ScorerContext
from services.scorer.decay import DecaySweep
from services.scorer.handlers import handler_table
from services.scorer.models import AUDIT, INBOX, OUTBOX
from services.scorer.scoring_model import load_scoring_model
from services.scorer.settings import ScorerSettings
from shared.app import service_app
from shared.audit import audit_routes
from shared.auth import require_admin
from shared.clock import Clock
from shared.runtime import ServiceRuntime
from shared.settings import load_settings


def create_app(settings: ScorerSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; an unreadable or invalid scoring model fails here, before anything starts."""
    config = settings or load_settings(ScorerSettings)
    model = load_scoring_model(config.scoring_model_path)

    def runtime() -> ServiceRuntime:
        built = ServiceRuntime(
            config,
            outbox_tables=OUTBOX,
            inbox_tables=INBOX,
            publish_topic=config.topics.scores,
            clock=clock,
        )
        context = ScorerContext.build(
            built.outbox, built.clock, model, built.metrics,
            refresh_seconds=config.scoring_model_refresh_seconds,
            keyring=built.use_lead_keys(), scrubber=built.scrubber,
        )
        built.subscribe(
            [config.topics.leads, config.topics.signals, config.topics.assignments],
            handler_table(context),
            # The campaigns' signals wait while new leads and buying signals are there.
            consumer_factory=partial(ScorerConsumer, context=context,
                                     bulk_topics=[config.topics.signals],
                                     bulk_batch=config.signal_batch),
            # Stage moves from the router's assignments are on nobody's clock; new leads are.
            slow_topics=[config.topics.assignments],
        )
        sweep = DecaySweep(
            built.db, context,
            interval=config.decay_sweep_seconds, batch_size=config.decay_sweep_batch_size,
        )

        async def keep_model_current() -> None:
            await context.models.run(built.db, built.clock)

        built.add_loop("scoring-model", keep_model_current)
        built.add_loop("decay-sweep", sweep.run)
        app.state.scorer_context = context
        return built

    app = service_app(
        title="leadrelay scorer",
        description=services.scorer.__doc__ or "",
        settings=config,
        runtime_factory=runtime,
        routes=[api.routes, funnel_api.routes, model_replay.routes,
                audit_routes(AUDIT, Depends(require_admin))],
    )
    return app
