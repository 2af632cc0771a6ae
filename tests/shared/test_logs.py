"""Log lines: one JSON object a line with the request's or event's ids, or readable text."""

from __future__ import annotations

import json
import logging
import sys

from shared.logs import JsonFormatter, LogContext, PlainFormatter, RepeatsHeldBack, use_context
from shared.tracing import parse_traceparent

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CONTEXT = LogContext("corr-1", "lead-1", f"00-{TRACE_ID}-b7ad6b7169203331-01")


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    made = logging.getLogger("sample").makeRecord(
        "sample", logging.WARNING, __file__, 1, message, args, None)
    if exc_info:
        try:
            raise ValueError("broken")
        except ValueError:
            made.exc_info = sys.exc_info()
    return made


def test_a_json_line_holds_the_event_and_the_ids_of_its_context() -> None:
    use_context(CONTEXT)
    try:
        line = json.loads(JsonFormatter("scorer").format(record("applied %d events", 3)))
    finally:
        use_context(None)
    assert line["service"] == "scorer"
    assert line["level"] == "warning"
    assert line["event"] == "applied 3 events"
    assert (line["correlation_id"], line["lead_id"], line["trace_id"]) == (
        "corr-1", "lead-1", TRACE_ID)


def test_a_json_line_outside_any_context_has_no_ids_and_keeps_its_traceback() -> None:
    text = JsonFormatter("router").format(record("failed", exc_info=True))
    line = json.loads(text)
    assert "\n" not in text
    assert not {"correlation_id", "lead_id", "trace_id"} & set(line)
    assert "ValueError: broken" in line["exception"]


def test_a_plain_line_ends_with_the_ids() -> None:
    use_context(CONTEXT)
    try:
        text = PlainFormatter("ingest").format(record("stored"))
    finally:
        use_context(None)
    assert text.endswith(f"ingest WARNING sample: stored [correlation_id=corr-1 "
                         f"lead_id=lead-1 trace_id={TRACE_ID}]")


def test_only_well_formed_traceparents_are_taken() -> None:
    assert parse_traceparent(CONTEXT.traceparent) is not None
    for broken in (None, "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                   f"00-{'0' * 32}-b7ad6b7169203331-01", f"00-{TRACE_ID}-{'0' * 16}-01",
                   f"ff-{TRACE_ID}-b7ad6b7169203331-01", f"00-{TRACE_ID}-b7ad6b716920333x-01"):
        assert parse_traceparent(broken) is None, broken


def test_a_library_repeating_itself_is_heard_once_a_minute_with_what_was_held_back() -> None:
    now = [0.0]
    held = RepeatsHeldBack(("aiokafka",), window=60, clock=lambda: now[0])

    def down(node: int) -> logging.LogRecord:
        return logging.getLogger("aiokafka.client").makeRecord(
            "aiokafka.client", logging.ERROR, __file__, 1,
            "Unable connect to node with id %s: %s", (node, "refused"), None)

    shown = []
    for second in range(120):
        now[0] = float(second)
        for node in (0, 1):  # every retry of every client: the same message
            made = down(node)
            if held.filter(made):
                shown.append((second, made.getMessage()))
    assert shown == [
        (0, "Unable connect to node with id 0: refused"),
        (60, "Unable connect to node with id 0: refused (119 more like this held back in 60 s)"),
    ]
    other = record("a line of our own")
    assert all(held.filter(other) for _ in range(3))  # only the libraries named are held back
