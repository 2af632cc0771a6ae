"""router's application factory: `uvicorn services.router.app:create_app --factory`."""

from __future__ import annotations

from functools import partial

from fastapi import Depends, FastAPI

import services.router
from services.router import api, console, link_pages, replay_api, tokens
from services.router.action_links import redact_access_logs
from services.router.consumer import RouterConsumer
from services.router.escalation import DatabaseClock, EscalationTimer
from services.router.handlers import handler_table
from services.router.models import AUDIT, INBOX, OUTBOX
from services.router.notifications import Notifier
from services.router.service import RouterContext
from services.router.settings import RouterSettings
from shared.app import service_app
from shared.audit import audit_routes
from shared.clock import Clock
from shared.encryption import SecretBox
from shared.outbound import DestinationPolicy
from shared.runtime import ServiceRuntime
from shared.settings import load_settings


def create_app(settings: RouterSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    config = settings or load_settings(RouterSettings)
    secrets = SecretBox.from_setting(config.encryption_keys)  # no key: stop here, at start
    destinations = DestinationPolicy(config.allowed_webhook_urls)
    redact_access_logs()

    def runtime() -> ServiceRuntime:
        service_runtime = ServiceRuntime(
            config,
            outbox_tables=OUTBOX,
            inbox_tables=INBOX,
            publish_topic=config.topics.assignments,
            clock=clock,
        )
        context = RouterContext.build(
            config, service_runtime.outbox, service_runtime.clock, service_runtime.metrics,
            secrets=secrets, destinations=destinations,
            keyring=service_runtime.use_lead_keys(), scrubber=service_runtime.scrubber,
        )
        service_runtime.subscribe(
            [config.topics.scores], handler_table(context),
            consumer_factory=partial(RouterConsumer, context=context),
        )
        notifier = Notifier(
            service_runtime.db, service_runtime.clock, config, context.deliveries,
            on_failure=lambda channel: context.metrics.delivery_failures.labels(
                channel=channel).inc(),
            secrets=secrets, destinations=destinations,
        )
        timer = EscalationTimer(
            service_runtime.db,
            context,
            interval=config.timer_interval_seconds,
            batch_size=config.escalation_batch_size,
            # An injected clock (tests) drives the timers too; else the database's clock.
            clock=None if clock is not None else DatabaseClock(),
        )
        service_runtime.add_loop("notifier", notifier.run)
        service_runtime.add_loop("escalation-timer", timer.run)
        app.state.router_context = context
        return service_runtime

    app = service_app(
        title="leadrelay router",
        description=services.router.__doc__ or "",
        settings=config,
        runtime_factory=runtime,
        routes=[api.routes, link_pages.routes, tokens.routes, replay_api.routes,
                audit_routes(AUDIT, Depends(api.require_admin)), *console.routes],
        admin_guard=Depends(api.require_admin),
    )
    console.install(app)
    return app
