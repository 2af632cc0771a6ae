"""Per-request telemetry: correlation id, request metrics and the request's span.

The correlation id is the request's `X-Correlation-ID`, else its `X-Request-ID`, else a new
one (at most 128 printable ASCII characters; a new one replaces anything else). It is answered
in both headers, given to the routes as `X-Correlation-ID` when the request had none (ingest
writes it into the events; one the request sent is left as it is, for the route to validate),
and set in the log context with the trace. Each request is counted and timed by route
template (never the raw path, which may hold a link's token), method and status
(`leadrelay_http_requests_total`, `leadrelay_http_request_duration_seconds`). While tracing
(`shared.tracing`), each request gets a server span, child of the caller's `traceparent`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing
from shared.logs import LogContext, use_context

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.metrics import ServiceMetrics

    MetricsLookup = Callable[[], ServiceMetrics | None]

logger = logging.getLogger("leadrelay.http")

CORRELATION_HEADER = b"x-correlation-id"
REQUEST_ID_HEADER = b"x-request-id"
MAX_CORRELATION_ID = 128
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class HttpTelemetry:
    """ASGI middleware; `metrics_of` gives the metrics of the running service."""

    def __init__(self, app: ASGIApp, *, service: str, metrics_of: MetricsLookup) -> None:
        self.app = app
        self.service = service
        self.metrics_of = metrics_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        correlation: bytes | None = None
        request_id: bytes | None = None
        traceparent: str | None = None
        for name, value in scope["headers"]:
            if name == CORRELATION_HEADER:
                correlation = value
            elif name == REQUEST_ID_HEADER:
                request_id = value
            elif name == b"traceparent":
                traceparent = tracing.checked_traceparent(value.decode("latin-1"))
        correlation_id = _valid(correlation) or _valid(request_id) or uuid.uuid4().hex
        if correlation is None:
            scope["headers"] = [*scope["headers"], (CORRELATION_HEADER, correlation_id.encode())]
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
        span = tracing.start_span(f"{self.service} {method}", traceparent, SpanKind.SERVER,
                                  {"http.request.method": method})
        if span is not None:
            traceparent = tracing.traceparent_of(span)
        use_context(LogContext(correlation_id, None, traceparent))
        answer = [(b"x-correlation-id", correlation_id.encode()),
                  (b"x-request-id", correlation_id.encode())]
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *answer]}
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_ids)
        except BaseException as error:
            failure = error
            raise
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            seconds = time.perf_counter() - started
            metrics = self.metrics_of()
            if metrics is not None:
                labels = (route, method, str(status))
                metrics.http_requests.labels(*labels).inc()
                metrics.http_request_duration.labels(*labels).observe(seconds)
            if span is not None:
                span.update_name(f"{self.service} {method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                tracing.end_span(span, failure, failed=status >= 500)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s %d %.1f ms", method, route, status, seconds * 1000)


def _valid(value: bytes | None) -> str | None:
    if not value or len(value) > MAX_CORRELATION_ID:
        return None
    text = value.decode("latin-1").strip()
    if not text or not text.isprintable() or not text.isascii():
        return None
    return text
