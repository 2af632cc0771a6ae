"""Logging set-up shared by the services: one JSON object a line, or plain text.

Each JSON line holds `time`, `service`, `level`, `logger`, `event` (the message) and, when the
line was written for a request or an event, `correlation_id`, `lead_id` and `trace_id` (from
`LogContext`, set by `shared.http_telemetry` for a request and by `shared.tracing` for a
consumed event). Log lines name leads by id, never by personal data.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["json", "plain"]


@dataclass(frozen=True, slots=True)
class LogContext:
    """What ties a line to a request or an event; also what travels on with its events."""

    correlation_id: str | None = None
    lead_id: str | None = None
    traceparent: str | None = None
    """W3C trace context the next hop's span is a child of (`shared.tracing`)."""

    @property
    def trace_id(self) -> str | None:
        if self.traceparent is None or len(self.traceparent) < 35:
            return None
        return self.traceparent[3:35]


_CURRENT: ContextVar[LogContext | None] = ContextVar("leadrelay_log_context", default=None)


def current_context() -> LogContext | None:
    return _CURRENT.get()


def use_context(context: LogContext | None) -> None:
    """Make `context` the current one for the rest of this task (or until set again)."""
    _CURRENT.set(context)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "service": self.service,
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        context = _CURRENT.get()
        if context is not None:
            if context.correlation_id is not None:
                line["correlation_id"] = context.correlation_id
            if context.lead_id is not None:
                line["lead_id"] = context.lead_id
            if (trace_id := context.trace_id) is not None:
                line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """The readable line: time, service, level, logger, message, then the ids it has."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _CURRENT.get()
        if context is None:
            return text
        ids = [f"{name}={value}" for name, value in (
            ("correlation_id", context.correlation_id), ("lead_id", context.lead_id),
            ("trace_id", context.trace_id)) if value is not None]
        if not ids:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def configure_logging(service: str, level: str = "INFO", log_format: LogFormat = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json"
                         else PlainFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "sqlalchemy.engine", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
