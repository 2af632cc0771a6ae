"""OpenTelemetry traces across the HTTP and Kafka hops, and the context each event carries on.

A request's span (`shared.http_telemetry`) or a consumed event's span is the parent of
everything that follows from it: its W3C `traceparent` is written into each outbox row with the
event (`shared.outbox`, so the relay still has it after the commit), sent in the Kafka record's
headers with the correlation id, and the consumer's span of that event is its child
(`consuming`); a router notification row keeps the traceparent of the span that queued it. One
trace then shows received -> scored -> assigned -> notified.

Spans are made and exported (OTLP over HTTP, the standard `OTEL_EXPORTER_OTLP_*` and
`OTEL_SERVICE_NAME` variables) only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; otherwise no span is made and a traceparent that
came in is handed on unchanged, so a trace started upstream still joins up further on.

Within a consumer batch or an ingest group commit, the events of many leads are written in one
transaction: the context each outbox row gets is looked up by the event's lead id
(`context_for`), falling back to the task's current one (`shared.logs.LogContext`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from shared.logs import LogContext, current_context, use_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT_HEADER = "traceparent"
CORRELATION_HEADER = "correlation_id"
"""Kafka record header names."""

logger = logging.getLogger("leadrelay.events")

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None

_BY_LEAD: ContextVar[dict[str, LogContext] | None] = ContextVar(
    "leadrelay_contexts_by_lead", default=None)


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether traces are to be exported: an OTLP endpoint is set and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def start_tracing(service: str) -> bool:
    """Make spans and export them over OTLP/HTTP when configured; True if it does."""
    global _tracer, _provider
    if _tracer is not None or not export_configured():
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"leadrelay-{service}"
    _provider = TracerProvider(resource=Resource.create({"service.name": name}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("leadrelay")
    return True


def stop_tracing() -> None:
    """Export what is left and stop making spans."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def tracing() -> bool:
    return _tracer is not None


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context of a W3C traceparent; None when absent or malformed."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True,
                       trace_flags=TraceFlags(int(match.group(4), 16)))


def traceparent_of(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def start_span(
    name: str, parent: str | None, kind: SpanKind, attributes: Mapping[str, Any] | None = None,
) -> Span | None:
    """A span, child of the `parent` traceparent (a new trace without one); None when not
    tracing. The caller ends it."""
    if _tracer is None:
        return None
    remote = parse_traceparent(parent)
    context = trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None
    return _tracer.start_span(name, context=context, kind=kind, attributes=attributes)


def end_span(span: Span | None, error: BaseException | None = None, *,
             failed: bool = False) -> None:
    if span is None:
        return
    if error is not None or failed:
        span.set_status(Status(StatusCode.ERROR,
                               type(error).__name__ if error is not None else None))
    span.end()


def checked_traceparent(value: str | None) -> str | None:
    """`value` if it is a valid traceparent, else None (what is handed on must parse)."""
    return value if parse_traceparent(value) is not None else None


def context_for(lead_id: str) -> LogContext | None:
    """The context an outbox row of `lead_id`'s event gets: that of the event or request it
    follows from."""
    by_lead = _BY_LEAD.get()
    if by_lead:
        found = by_lead.get(lead_id)
        if found is not None:
            return found
    return current_context()


def traceparent_for(lead_id: str) -> str | None:
    """The traceparent a row of `lead_id` keeps (a router notification)."""
    context = context_for(lead_id)
    return context.traceparent if context is not None else None


@contextmanager
def contexts_by_lead() -> Iterator[None]:
    """Within this block, `pin_to_lead` records each lead's context (an ingest group commit)."""
    token = _BY_LEAD.set({})
    try:
        yield
    finally:
        _BY_LEAD.reset(token)


def pin_to_lead(lead_id: str) -> None:
    """Remember the current context as `lead_id`'s until the enclosing `contexts_by_lead`
    ends: its events are written to the outbox later in the same transaction."""
    by_lead, context = _BY_LEAD.get(), current_context()
    if by_lead is not None and context is not None:
        by_lead[lead_id] = context


def record_headers(traceparent: str | None, correlation_id: str | None) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    if traceparent:
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    if correlation_id:
        headers.append((CORRELATION_HEADER, correlation_id.encode()))
    return headers


@contextmanager
def consuming(
    service: str, records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
) -> Iterator[None]:
    """Around applying a consumer batch: a span per event (child of its record's traceparent)
    while tracing, and each lead's context for the outbox rows and log lines of the batch."""
    by_lead: dict[str, LogContext] = {}
    spans: list[Span] = []
    log_each = logger.isEnabledFor(logging.DEBUG)
    for messages in records.values():
        for message in messages:
            traceparent, correlation_id, event_type = _headers_of(message.headers)
            lead_id = message.key.decode(errors="replace") if message.key else None
            if _tracer is not None:
                span = start_span(
                    f"{service} apply {event_type or 'event'}", traceparent, SpanKind.CONSUMER,
                    {"messaging.system": "kafka", "messaging.operation.type": "process",
                     "messaging.destination.name": message.topic,
                     "messaging.destination.partition.id": str(message.partition),
                     "messaging.kafka.offset": message.offset,
                     "leadrelay.event_type": event_type or "",
                     "leadrelay.lead_id": lead_id or ""})
                if span is not None:
                    spans.append(span)
                    traceparent = traceparent_of(span)
            if lead_id is not None and (traceparent or correlation_id):
                by_lead[lead_id] = LogContext(correlation_id, lead_id, traceparent)
            if log_each:
                _log_consumed(message, event_type, LogContext(correlation_id, lead_id, traceparent))
    with _leads_in(by_lead, spans):
        yield


@contextmanager
def continuing(name: str, parents: Mapping[str, str | None]) -> Iterator[None]:
    """Around work a timer does for leads whose traces began elsewhere (an offer lapsing, a
    reminder due): per lead, a span `name`, child of the traceparent in `parents` (the one its
    offer was made in), while tracing; and that lead's context for the outbox rows and
    notifications the work writes, so they stay in the lead's trace."""
    by_lead: dict[str, LogContext] = {}
    spans: list[Span] = []
    for lead_id, parent in parents.items():
        traceparent = checked_traceparent(parent)
        span = start_span(name, traceparent, SpanKind.INTERNAL, {"leadrelay.lead_id": lead_id})
        if span is not None:
            spans.append(span)
            traceparent = traceparent_of(span)
        if traceparent:
            by_lead[lead_id] = LogContext(None, lead_id, traceparent)
    with _leads_in(by_lead, spans):
        yield


@contextmanager
def _leads_in(by_lead: dict[str, LogContext], spans: Sequence[Span]) -> Iterator[None]:
    """`by_lead` is each lead's context within the block; `spans` end with it (failed if it
    raised)."""
    token = _BY_LEAD.set(by_lead)
    previous = current_context()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as error:
        failure = error
        raise
    finally:
        _BY_LEAD.reset(token)
        use_context(previous)  # `use_lead_context` may have set one event's
        for span in spans:
            end_span(span, failure)


def _log_consumed(message: ConsumerRecord, event_type: str | None, context: LogContext) -> None:
    previous = current_context()
    use_context(context)
    try:
        logger.debug("consumed %s from %s[%d] at offset %d", event_type, message.topic,
                     message.partition, message.offset)
    finally:
        use_context(previous)


def use_lead_context(lead_id: str | None) -> None:
    """Make the context of `lead_id`'s event in this batch the current one (for log lines
    written while applying it alone)."""
    by_lead = _BY_LEAD.get()
    found = by_lead.get(lead_id) if by_lead and lead_id is not None else None
    use_context(found if found is not None else LogContext(lead_id=lead_id))


def _headers_of(
    headers: Iterable[tuple[str, bytes]] | None,
) -> tuple[str | None, str | None, str | None]:
    traceparent = correlation_id = event_type = None
    for name, value in headers or ():
        if name == TRACEPARENT_HEADER:
            traceparent = checked_traceparent(bytes(value).decode(errors="replace"))
        elif name == CORRELATION_HEADER:
            correlation_id = bytes(value).decode(errors="replace")[:128]
        elif name == "event_type":
            event_type = bytes(value).decode(errors="replace")
    return traceparent, correlation_id, event_type
