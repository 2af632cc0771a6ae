"""RFC 9457 problem details for every error a service answers, so clients never see a bare 500.

`install_problem_handlers(app)` turns validation errors into a `422` with one entry per invalid
field (a JSON body that is not UTF-8 too, as ingest answers it), HTTP errors into their status
(a `405` with every method of the path in `Allow`), a database outage
(`shared.outages.is_outage`, whatever raised it: a route, a dependency, ingest's group commit)
into `503` with `Retry-After`, and any
other exception into a `500` problem that leaks nothing of the internals. An outage is logged
as one warning when the first `503` goes out, then at most one line every
`OUTAGE_LOG_SECONDS` counting the `503`s since, not one line per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.outages import is_outage, outage_cause

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://leadrelay.dev/problems/"
RETRY_AFTER_SECONDS = 5
OUTAGE_LOG_SECONDS = 10.0


class ProblemError(Exception):
    """Raise from any endpoint or service function to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_errors(error: RequestValidationError) -> list[dict[str, str]]:
    entries = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        if location and location[0] in {"body", "query", "path", "header"}:
            source, field = location[0], ".".join(location[1:])
        else:
            source, field = "body", ".".join(location)
        entries.append({"field": field or source, "in": source, "message": str(item.get("msg"))})
    return entries


def _undecodable_body(error: StarletteHTTPException) -> dict[str, str] | None:
    """FastAPI answers a JSON body it cannot decode as text with a bare `400`; ingest, which
    reads its bodies itself, answers `422`: every service answers the same."""
    cause = error.__cause__
    if error.status_code != 400 or not isinstance(cause, UnicodeDecodeError):
        return None
    return {"field": "body", "in": "body", "message": f"not UTF-8 at byte {cause.start}"}


def _methods_of_path(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (Starlette's `405`
    names only the first route that matched the path, one method). As in OpenAPI, a path
    without parameters comes before the templates it also fits: `/v1/leads/batch` allows
    `POST`, not the `GET` of `/v1/leads/{lead_id}`."""
    exact: set[str] = set()
    templated: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            found = exact if not getattr(route, "param_convertors", None) else templated
            found |= route.methods or set()
    return sorted(exact or templated)


class _OutageAnswers:
    """Counts the `503`s of an outage, so that it is logged now and then, not per request."""

    def __init__(self) -> None:
        self.unlogged = 0
        self.logged_at = float("-inf")

    def answered(self, error: BaseException) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at < OUTAGE_LOG_SECONDS:
            return
        logger.warning("database unavailable (%s): %d requests answered 503 since the last "
                       "line", outage_cause(error), self.unlogged)
        self.logged_at, self.unlogged = now, 0


def install_problem_handlers(app: FastAPI) -> None:
    outage_answers = _OutageAnswers()

    async def on_problem(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ProblemError)
        return problem_response(
            request, error.status, error.title, error.detail,
            slug=error.slug, headers=error.headers, **error.extensions,
        )

    async def on_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return problem_response(
            request, 422, "Invalid request", "The request has invalid or missing fields.",
            slug="invalid-request", errors=_field_errors(error),
        )

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        undecodable = _undecodable_body(error)
        if undecodable is not None:
            return problem_response(
                request, 422, "Invalid request", "The request has invalid or missing fields.",
                slug="invalid-request", errors=[undecodable],
            )
        title = {404: "Not found", 405: "Method not allowed"}.get(error.status_code, "HTTP error")
        detail = error.detail if isinstance(error.detail, str) else None
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_methods_of_path(request))
        return problem_response(request, error.status_code, title, detail, headers=headers)

    async def on_database_down(request: Request, error: Exception) -> JSONResponse:
        outage_answers.answered(error)
        return problem_response(
            request, 503, "Service unavailable", "The database cannot be reached; retry later.",
            slug="unavailable", headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def on_anything(request: Request, error: Exception) -> JSONResponse:
        if is_outage(error):
            return await on_database_down(request, error)
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(
            request, 500, "Internal error", "An unexpected error occurred; it has been logged.",
            slug="internal",
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # Handlers of these classes answer in place; Starlette's handler of `Exception` answers
    # too but raises the error again, to the server, which logs it with its traceback.
    for database_error in (SQLAlchemyError, OSError, asyncpg.PostgresError,
                           asyncpg.InterfaceError, ExceptionGroup):
        app.add_exception_handler(database_error, on_anything)
    app.add_exception_handler(Exception, on_anything)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "One entry per invalid field (`422`)",
            "items": {
                "type": "object",
                "required": ["field", "in", "message"],
                "properties": {
                    "field": {"type": "string"},
                    "in": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
"""The OpenAPI schema of a problem document, as every service documents its errors."""
