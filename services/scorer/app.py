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
from shared.db import Database
from shared.runtime import ServiceRuntime
from shared.settings import load_settings


def create_app(settings: ScorerSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; an unreadable or invalid scoring model fails here, before anything starts."""
    config = settings or load_settings(ScorerSettings)
    model = load_scoring_model(config.scoring_model_path)

    lanes = config.scorer_lanes

    def runtime() -> ServiceRuntime:
        built = ServiceRuntime(
            config,
            outbox_tables=OUTBOX,
            inbox_tables=INBOX,
            publish_topic=config.topics.scores,
            clock=clock,
            relay=lanes != "signals",
            outbox_written_elsewhere=lanes == "leads",
            # On SQLite, a batch of signals lets a new lead waiting to be written go first.
            database=Database(config.database_url, yield_writes=lanes == "signals"),
        )
        context = ScorerContext.build(
            built.outbox, built.clock, model, built.metrics,
            refresh_seconds=config.scoring_model_refresh_seconds,
            keyring=built.use_lead_keys(), scrubber=built.scrubber,
        )
        handlers = handler_table(context)
        if lanes != "signals":
            built.subscribe(
                [config.topics.leads, config.topics.assignments], handlers,
                consumer_factory=partial(ScorerConsumer, context=context),
                # Stage moves from the router's assignments are on nobody's clock; new leads are.
                slow_topics=[config.topics.assignments],
            )
            sweep = DecaySweep(
                built.db, context,
                interval=config.decay_sweep_seconds, batch_size=config.decay_sweep_batch_size,
            )
            built.add_loop("decay-sweep", sweep.run)
        if lanes != "leads":
            # The campaigns' signals: a consumer of their own, so a new lead or a buying
            # signal never waits for their fetches, only for a batch holding the write lock.
            built.subscribe(
                [config.topics.signals], handlers, lane="signals",
                idle_fetch_wait_ms=config.signals_idle_fetch_max_wait_ms,
                consumer_factory=partial(ScorerConsumer, context=context,
                                         max_batch=config.signal_batch),
            )

        async def keep_model_current() -> None:
            await context.models.run(built.db, built.clock)

        built.add_loop("scoring-model", keep_model_current)
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
