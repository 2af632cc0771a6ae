"""What request and event telemetry costs, in CPU microseconds, tracing off and on.

Times, in this process and without any I/O, `shared.http_telemetry`'s middleware around an
ASGI app that answers at once (correlation id, request metrics, and the span while tracing)
and `shared.tracing.consuming` around a batch of 20 records (each lead's context, and a span
per record while tracing). Tracing on makes real SDK spans; `--encode` also encodes each span
into OTLP protobuf as its export would (one span per export: batches cost less per span).

    python bench/telemetry_overhead.py
    python bench/telemetry_overhead.py --encode
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from starlette.types import Message, Receive, Scope, Send

from shared import tracing
from shared.http_telemetry import HttpTelemetry
from shared.metrics import ServiceMetrics

BATCH = 20


class _Route:
    path = "/v1/leads"


async def answering_app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def cpu_per_request(app: Any, requests: int) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    started = time.process_time()
    for _ in range(requests):
        await app({"type": "http", "method": "POST", "path": "/v1/leads",
                   "headers": [(b"host", b"ingest"), (b"content-type", b"application/json"),
                               (b"authorization", b"Bearer token")]}, receive, send)
    return (time.process_time() - started) / requests * 1e6


def cpu_per_event(events: int) -> float:
    headers = [("event_type", b"lead.received"), ("event_id", b"id"),
               ("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode()),
               ("correlation_id", b"request-1")]
    partition = TopicPartition("leads", 0)
    records: dict[TopicPartition, Sequence[ConsumerRecord]] = {partition: [
        ConsumerRecord("leads", 0, offset, 0, 0, f"lead-{offset}".encode(), b"{}", None, 10, 2,
                       headers) for offset in range(BATCH)]}
    started = time.process_time()
    for _ in range(events // BATCH):
        with tracing.consuming("scorer", records):
            for record in records[partition]:
                tracing.context_for(record.key.decode())
    return (time.process_time() - started) / events * 1e6


def trace_in_memory(encode: bool) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Encoding(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if encode:
                encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Encoding()))
    tracing._tracer = provider.get_tracer("bench")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--encode", action="store_true")
    args = parser.parse_args()
    metrics = ServiceMetrics("bench")
    wrapped = HttpTelemetry(answering_app, service="ingest", metrics_of=lambda: metrics)
    for label in ("off", "on"):
        if label == "on":
            trace_in_memory(args.encode)
        bare = await cpu_per_request(answering_app, args.count)
        with_telemetry = await cpu_per_request(wrapped, args.count)
        print(f"tracing {label}: {with_telemetry - bare:6.1f} us per request, "
              f"{cpu_per_event(args.count):6.1f} us per consumed event")


if __name__ == "__main__":
    asyncio.run(main())
