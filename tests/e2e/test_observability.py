"""Logs, traces and metrics across real processes: one lead followed from ingest's request to
the SDR's webhook by its trace (exported over OTLP to a local receiver) and by its correlation
id (in each service's JSON log), and the Grafana dashboard checked against real scrapes.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver
from tests.e2e.conftest import Platform
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "leadrelay.json"
SERVER, CLIENT, CONSUMER = 2, 3, 5
"""OTLP span kinds."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def data_dir(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"observe-{platform.name}")


@pytest.fixture(scope="module")
def system(
    platform: Platform, data_dir: Path, receiver: WebhookReceiver, otlp: OtlpReceiver
) -> Iterator[RunningSystem]:
    with running_system(
        bootstrap_servers=platform.bootstrap_servers,
        data_dir=data_dir,
        topic_prefix=platform.topic_prefix("observe"),
        sla_seconds=60,
        database_url=platform.database_url,
        broker_env=platform.service_env,
        allowed_webhook_urls=[receiver.base_url],
        extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                   "OTEL_BSP_SCHEDULE_DELAY": "100",
                   "LEADRELAY_LOG_LEVEL": "DEBUG"},
    ) as running:
        yield running


async def route_one_lead(
    system: RunningSystem, receiver: WebhookReceiver, trace_id: str, client_span_id: str,
    request_id: str,
) -> tuple[str, httpx.Response]:
    async with httpx.AsyncClient(timeout=10, headers=system.admin_headers) as client:
        person = await client.post(f"{system.url('router')}/v1/sdrs", json={
            "name": "Traced SDR", "email": f"sdr.{uuid.uuid4().hex[:8]}@team.example",
            "webhook_url": receiver.new_endpoint()})
        assert person.status_code == 201, person.text
        answer = await client.post(
            f"{system.url('ingest')}/v1/leads",
            headers={"traceparent": f"00-{trace_id}-{client_span_id}-01",
                     "X-Request-ID": request_id},
            json={"email": f"traced.{uuid.uuid4().hex[:8]}@acme.example", "name": "Traced",
                  "company": "Acme", "demo_requested": True})
        assert answer.status_code == 202, answer.text
    lead_id: str = answer.json()["lead_id"]

    async def notified() -> list[Any]:
        return receiver.for_lead(lead_id)

    await eventually(notified, timeout=30)
    return lead_id, answer


def the_span(spans: list[ReceivedSpan], service: str, kind: int, name: str) -> ReceivedSpan:
    found = [span for span in spans
             if span.service == f"leadrelay-{service}" and span.kind == kind and name in span.name]
    assert len(found) == 1, (service, name, spans)
    return found[0]


async def test_one_trace_spans_received_scored_assigned_notified(
    system: RunningSystem, receiver: WebhookReceiver, otlp: OtlpReceiver
) -> None:
    trace_id, client_span_id = secrets.token_hex(16), secrets.token_hex(8)
    lead_id, _ = await route_one_lead(system, receiver, trace_id, client_span_id,
                                      f"req-{uuid.uuid4().hex}")

    def complete(spans: list[ReceivedSpan]) -> bool:
        return {(span.service, span.kind) for span in spans} >= {
            ("leadrelay-ingest", SERVER), ("leadrelay-scorer", CONSUMER),
            ("leadrelay-router", CONSUMER), ("leadrelay-router", CLIENT)}

    async def spans_of_trace() -> list[ReceivedSpan]:
        return otlp.of_trace(trace_id)

    spans = await eventually(spans_of_trace, until=complete, timeout=30)
    received = the_span(spans, "ingest", SERVER, "POST /v1/leads")
    scored = the_span(spans, "scorer", CONSUMER, "lead.received")
    assigned = the_span(spans, "router", CONSUMER, "lead.scored")
    notified = the_span(spans, "router", CLIENT, "notify offer")
    assert received.parent_span_id == client_span_id
    assert scored.parent_span_id == received.span_id
    assert assigned.parent_span_id == scored.span_id
    assert notified.parent_span_id == assigned.span_id
    assert received.attributes["http.route"] == "/v1/leads"
    assert scored.attributes["leadrelay.lead_id"] == lead_id
    assert assigned.attributes["leadrelay.lead_id"] == lead_id
    [(_, offer)] = receiver.for_lead(lead_id)
    assert offer["lead_id"] == lead_id


async def test_every_service_logs_the_correlation_id_as_json(
    system: RunningSystem, receiver: WebhookReceiver, data_dir: Path
) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    trace_id = secrets.token_hex(16)
    lead_id, answer = await route_one_lead(system, receiver, trace_id, secrets.token_hex(8),
                                           request_id)
    assert answer.headers["x-correlation-id"] == request_id
    assert answer.headers["x-request-id"] == request_id

    def lines_of(service: str) -> list[dict[str, Any]]:
        text = (data_dir / "logs" / f"{service}.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    async def correlated() -> dict[str, list[dict[str, Any]]]:
        return {service: [line for line in lines_of(service)
                          if line.get("correlation_id") == request_id]
                for service in ("ingest", "scorer", "router")}

    found = await eventually(correlated, until=lambda got: all(got.values()), timeout=30)
    for service, lines in found.items():
        for line in lines:
            assert line["service"] == service
            assert line["trace_id"] == trace_id
            assert {"time", "level", "event", "logger"} <= set(line)
    assert any(line.get("lead_id") == lead_id for line in found["scorer"])
    assert any(line.get("lead_id") == lead_id for line in found["router"])


async def test_the_dashboard_uses_only_metrics_the_services_serve(
    system: RunningSystem, receiver: WebhookReceiver
) -> None:
    await route_one_lead(system, receiver, secrets.token_hex(16), secrets.token_hex(8),
                         "dashboard-check")
    served: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as client:
        scrapes = {name: (await client.get(f"{system.url(name)}/metrics")).text
                   for name in ("ingest", "scorer", "router")}
    for text in scrapes.values():
        for family in text_string_to_metric_families(text):
            served |= sample_names(family.name, family.type)
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for panel in dashboard["panels"] for target in panel.get("targets", ())
            for name in re.findall(r"\b((?:leadrelay|process|python)_[a-z0-9_]+)\b",
                                   target["expr"])}
    assert len(used) >= 20
    assert used - served == set()
    assert 'leadrelay_http_requests_total{method="POST",route="/v1/leads",status="202"}' in (
        scrapes["ingest"])
    assert "process_cpu_seconds_total" in scrapes["router"]


def sample_names(family: str, kind: str) -> set[str]:
    """The names a family's samples may have (the parser drops `_total` from a counter's)."""
    if kind == "counter":
        return {f"{family}_total", f"{family}_created"}
    if kind == "histogram":
        return {family, *(f"{family}_{suffix}" for suffix in ("bucket", "sum", "count",
                                                              "created"))}
    return {family}
