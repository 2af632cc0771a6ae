"""ingest's application factory: `uvicorn services.ingest.app:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

import services.ingest
from services.ingest import api, lead_keys
from services.ingest.crm_fetches import CrmFetcher
from services.ingest.idempotency import IdempotentRequests
from services.ingest.lead_writes import group_hooks
from services.ingest.models import INBOX, OUTBOX
from services.ingest.retention import SubmissionRetention
from services.ingest.service import FormLimits, IngestContext
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourceRegistry, load_sources_file
from shared.app import service_app
from shared.clock import Clock
from shared.encryption import SecretBox
from shared.group_commit import GroupCommit
from shared.runtime import ServiceRuntime
from shared.settings import load_settings


def create_app(settings: IngestSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    config = settings or load_settings(IngestSettings)
    file_sources = load_sources_file(config.sources_file)
    secrets = SecretBox.from_setting(config.encryption_keys)  # no key: stop here, at start

    def runtime() -> ServiceRuntime:
        built = ServiceRuntime(
            config,
            outbox_tables=OUTBOX,
            inbox_tables=INBOX,
            publish_topic=config.topics.leads,
            clock=clock,
            # A new lead's event goes out before any backlog of campaign signals.
            relay_fast_topics=(config.topics.leads,),
        )
        built.outbox.encoder = lead_keys.encode
        begin_group, end_group = group_hooks(built.outbox)
        writes = GroupCommit(built.db, prepare=begin_group, finish=end_group)
        context = IngestContext(
            outbox=built.outbox, clock=built.clock, settings=config,
            sources=SourceRegistry(file_sources, secrets), form_limits=FormLimits.of(config),
            idempotency=IdempotentRequests(built.db, built.clock, writes), writes=writes,
            scrubber=built.scrubber,
        )
        built.add_loop("group-commit", writes.run_writer)
        built.add_loop("submission-retention", SubmissionRetention(built.db, context).run)
        built.add_loop("crm-fetch", CrmFetcher(built.db, context).run)
        app.state.ingest = context
        return built

    app = service_app(
        title="leadrelay ingest",
        description=services.ingest.__doc__ or "",
        settings=config,
        runtime_factory=runtime,
        routes=api.routes,
    )
    return app
