"""ingest's application factory: `uvicorn services.ingest.app:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

import services.ingest
from services.ingest import api
from services.ingest.models import INBOX, OUTBOX
from services.ingest.service import IngestContext
from services.ingest.settings import IngestSettings
from shared.app import service_app
from shared.clock import Clock
from shared.runtime import ServiceRuntime
from shared.settings import load_settings


def create_app(settings: IngestSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    config = settings or load_settings(IngestSettings)

    def runtime() -> ServiceRuntime:
        built = ServiceRuntime(
            config,
            outbox_tables=OUTBOX,
            inbox_tables=INBOX,
            publish_topic=config.topics.leads,
            clock=clock,
        )
        app.state.ingest = IngestContext(outbox=built.outbox, clock=built.clock)
        return built

    app = service_app(
        title="leadrelay ingest",
        description=services.ingest.__doc__ or "",
        runtime_factory=runtime,
        routes=[api.routes],
    )
    return app
