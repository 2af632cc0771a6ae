"""The request middleware: correlation ids in and out, request metrics by route template."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI, Header
from prometheus_client.parser import text_string_to_metric_families

from shared.http_telemetry import HttpTelemetry
from shared.logs import current_context
from shared.metrics import ServiceMetrics

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def telemetry_app(metrics: ServiceMetrics) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str, x_correlation_id: str = Header()) -> dict[str, str | None]:
        context = current_context()
        assert context is not None
        return {"seen": x_correlation_id, "logged": context.correlation_id,
                "traceparent": context.traceparent}

    app.add_middleware(HttpTelemetry, service="sample", metrics_of=lambda: metrics)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def requests_counted(metrics: ServiceMetrics) -> dict[tuple[str, str, str], float]:
    counted = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "leadrelay_http_requests_total":
                labels = sample.labels
                counted[(labels["route"], labels["method"], labels["status"])] = sample.value
    return counted


async def test_a_request_without_an_id_gets_a_new_one_everywhere() -> None:
    async with client(telemetry_app(ServiceMetrics("sample"))) as http:
        answer = await http.get("/items/1")
    generated = answer.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert answer.headers["x-request-id"] == generated
    assert answer.json()["seen"] == answer.json()["logged"] == generated


async def test_the_callers_id_and_trace_are_kept() -> None:
    async with client(telemetry_app(ServiceMetrics("sample"))) as http:
        by_request_id = await http.get("/items/1", headers={"X-Request-ID": "req-42"})
        by_correlation_id = await http.get("/items/1", headers={
            "X-Correlation-ID": "corr-7", "X-Request-ID": "req-42", "traceparent": TRACEPARENT})
    assert by_request_id.headers["x-correlation-id"] == "req-42"
    assert by_request_id.json()["seen"] == "req-42"
    assert by_correlation_id.headers["x-correlation-id"] == "corr-7"
    assert by_correlation_id.json() == {"seen": "corr-7", "logged": "corr-7",
                                        "traceparent": TRACEPARENT}


async def test_an_unusable_request_id_is_replaced() -> None:
    async with client(telemetry_app(ServiceMetrics("sample"))) as http:
        too_long = await http.get("/items/1", headers={"X-Request-ID": "x" * 129})
        unprintable = await http.get("/items/1", headers={"X-Request-ID": "a\tb"})
    for answer in (too_long, unprintable):
        assert answer.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-correlation-id"])
        assert answer.json()["seen"] == answer.headers["x-correlation-id"]


async def test_an_unusable_correlation_id_is_left_for_the_route_and_not_logged() -> None:
    async with client(telemetry_app(ServiceMetrics("sample"))) as http:
        answer = await http.get("/items/1", headers={"X-Correlation-ID": "x" * 129})
    generated = answer.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert answer.json()["seen"] == "x" * 129
    assert answer.json()["logged"] == generated


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    metrics = ServiceMetrics("sample")
    async with client(telemetry_app(metrics)) as http:
        for item_id in ("1", "2", "secret-token"):
            await http.get(f"/items/{item_id}")
        await http.get("/nowhere/at/all")
        await http.post("/items/1")
    assert requests_counted(metrics) == {
        ("/items/{item_id}", "GET", "200"): 3.0,
        ("unmatched", "GET", "404"): 1.0,
        ("/items/{item_id}", "POST", "405"): 1.0,
    }
    text = metrics.render().decode()
    assert "secret-token" not in text
    assert ('leadrelay_http_request_duration_seconds_count{method="GET",'
            'route="/items/{item_id}",status="200"} 3.0') in text
