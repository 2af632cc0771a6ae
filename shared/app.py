"""The FastAPI application shape every service shares: lifespan, problem details, health routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, params
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shared import tracing
from shared.auth import (
    bearer_token,
    document_bearer_auth,
    parse_tokens,
    require_admin,
    token_matches,
    unauthorized,
)
from shared.dead_letters import dead_letter_routes
from shared.docs import serve_local_docs
from shared.health import health_routes
from shared.http_telemetry import HttpTelemetry
from shared.metrics import ServiceMetrics
from shared.openapi import document_problems
from shared.problems import install_problem_handlers
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings


def service_app(
    *,
    title: str,
    description: str,
    settings: ServiceSettings,
    runtime_factory: Callable[[], ServiceRuntime],
    routes: Sequence[APIRouter],
    admin_guard: params.Depends | None = None,
) -> FastAPI:
    """Build a service's app; its runtime is created and started by the lifespan, not at import.

    Every route of `routes` carries its own guard (`shared.auth`); the health routes do not,
    and `/metrics` asks for `LEADRELAY_METRICS_TOKEN` when it is set. Every service also gets
    the admin routes of its dead letters (`shared.dead_letters`), behind `admin_guard` (by
    default the admin token; a service whose callers have tokens of their own passes the guard
    that answers them `403`).

    Every request goes through `shared.http_telemetry` (correlation id, request metrics, its
    span); spans are exported while `shared.tracing` is configured. FastAPI's own
    instrumentation stays off: it would look for providers in the environment on every request.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.start_tracing(settings.service_name)
        try:
            async with runtime_factory() as runtime:
                app.state.runtime = runtime
                yield
        finally:
            tracing.stop_tracing()

    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  docs_url=None, redoc_url=None)
    serve_local_docs(app)

    def running_metrics() -> ServiceMetrics | None:
        runtime: ServiceRuntime | None = getattr(app.state, "runtime", None)
        return runtime.metrics if runtime is not None else None

    app.add_middleware(HttpTelemetry, service=settings.service_name, metrics_of=running_metrics)
    install_problem_handlers(app)
    app.state.admin_tokens = settings.admin_tokens
    metrics_tokens = parse_tokens(settings.metrics_token)
    for router in routes:
        app.include_router(router)
    app.include_router(dead_letter_routes(admin_guard or Depends(require_admin)))

    async def readiness() -> dict[str, bool]:
        runtime: ServiceRuntime = app.state.runtime
        return await runtime.readiness()

    app.include_router(health_routes(readiness))

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        if metrics_tokens:
            token = bearer_token(request)
            if token is None or not token_matches(token, metrics_tokens):
                raise unauthorized("`/metrics` needs the metrics bearer token.")
        runtime: ServiceRuntime = app.state.runtime
        await runtime.refresh_metrics()
        return PlainTextResponse(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    document_bearer_auth(app)
    document_problems(app)
    return app


async def get_runtime(request: Request) -> ServiceRuntime:
    # A coroutine: FastAPI runs a plain function dependency on a worker thread, a thread
    # hand-off per request (ingest's lean handler then takes the route, too).
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
