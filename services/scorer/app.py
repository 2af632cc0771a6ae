"""scorer's application factory: `uvicorn services.scorer.app:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

import services.scorer
from services.scorer import api
from services.scorer.handlers import ScorerContext, handler_table
from services.scorer.models import INBOX, OUTBOX
from services.scorer.scoring_model import load_scoring_model
from services.scorer.settings import ScorerSettings
from shared.app import service_app
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
        built.subscribe(
            [config.topics.leads], handler_table(ScorerContext(built.outbox, built.clock, model))
        )
        return built

    return service_app(
        title="leadrelay scorer",
        description=services.scorer.__doc__ or "",
        runtime_factory=runtime,
        routes=[api.routes],
    )
