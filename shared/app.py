"""The FastAPI application shape every service shares: lifespan, problem details, health routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, params
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shared.auth import (
    bearer_token,
    document_bearer_auth,
    parse_tokens,
    require_admin,
    token_matches,
    unauthorized,
)
from shared.dead_letters import dead_letter_routes
from shared.health import health_routes
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

    FastAPI's OpenTelemetry instrumentation is on only with `LEADRELAY_OPENTELEMETRY`: left on,
    it looks for configured providers in the environment on every request.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime_factory() as runtime:
            app.state.runtime = runtime
            yield

    traced = settings.opentelemetry
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": traced, "metrics": traced, "logs": traced})
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
    return app


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
