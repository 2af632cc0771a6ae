"""Logging set-up shared by the services: one JSON object a line, or plain text.

Each JSON line holds `time`, `service`, `level`, `logger`, `event` (the message) and, when the
line was written for a request or an event, `correlation_id`, `lead_id` and `trace_id` (from
`LogContext`, set by `shared.http_telemetry` for a request and by `shared.tracing` for a
consumed event). Log lines name leads by id, never by personal data.

While the broker is down, aiokafka logs the same error at every retry of every client (each
client retries every 200 ms); `RepeatsHeldBack` lets one line per message through each minute
and says how many it held back.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
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


class RepeatsHeldBack(logging.Filter):
    """Lets a library's message through once per `window` seconds: the first time, then the
    first time after each window, with how many like it were held back meanwhile. A message is
    its logger, level and text before the arguments (`Unable connect to node with id %s: %s`)."""

    def __init__(self, prefixes: tuple[str, ...], *, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window = window
        self.clock = clock
        self._shown: dict[tuple[str, int, str], tuple[float, int]] = {}
        """Message -> when it was last let through, and how many were held back since."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        shown = self._shown.get(key)
        if shown is not None and now - shown[0] < self.window:
            self._shown[key] = (shown[0], shown[1] + 1)
            return False
        self._shown[key] = (now, 0)
        if shown is not None and shown[1]:
            held = f"{shown[1]} more like this held back in {self.window:.0f} s"
            record.msg = f"{record.msg} ({held})"
        return True


def configure_logging(service: str, level: str = "INFO", log_format: LogFormat = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json"
                         else PlainFormatter(service))
    handler.addFilter(RepeatsHeldBack(("aiokafka", "kafka")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "sqlalchemy.engine", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
