"""`/healthz` (the process answers) and `/readyz` (its database, broker loops and consumer work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse


def health_routes(readiness: Callable[[], Awaitable[dict[str, bool]]]) -> APIRouter:
    routes = APIRouter(tags=["health"])

    @routes.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/readyz", summary="Readiness: database reachable, loops running, consumer joined")
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return routes
