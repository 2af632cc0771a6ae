"""Each service answers as its OpenAPI document says, running for real: three processes on their
ports with their SQLite files and the embedded broker, as a client meets them.

- every document is a valid OpenAPI document (`openapi-spec-validator`), its `$ref`s resolve,
  and every error it lists is `application/problem+json` (or, for a link's pages, HTML);
- Schemathesis, every phase (examples, coverage, fuzzing, then stateful, following the links it
  infers) and every check, with the admin token: no server error, no answer off the document
  (status, content type, headers, body), nothing invalid accepted, nothing missing after it was
  created, no route open without a credential. `positive_data_acceptance` is left out: a
  schema-valid body may still be refused with `422`, since the services check more than a JSON
  schema says (an email or phone number that exists, a webhook host that resolves, a model
  whose rules make sense). Ingest also leaves out `ensure_resource_availability`: a lead post
  replayed with its `Idempotency-Key` answers as it did the first time, with the id of a lead
  the run may have erased since, as Stripe's keys do;
- then each case the first runs found, as a plain request.

Time: the three services are tested in parallel, each bounded by `--max-time` per run
(`LEADRELAY_SCHEMATHESIS_SECONDS`, 25 s for the first phases and 15 s for the stateful one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from leadrelay.broker import EmbeddedBroker
from leadrelay.local_system import RunningSystem, running_system
from shared.problems import PROBLEM_MEDIA_TYPE

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

SERVICES = ("ingest", "scorer", "router")
SECONDS = int(os.environ.get("LEADRELAY_SCHEMATHESIS_SECONDS", "25"))
SEED = os.environ.get("LEADRELAY_SCHEMATHESIS_SEED", "20261207")
LEFT_OUT = {
    "ingest": "positive_data_acceptance,ensure_resource_availability",
    "scorer": "positive_data_acceptance",
    "router": "positive_data_acceptance",
}
NOT_FUZZED = {
    # Their run time grows with what a fuzzer sends: a rule set times the period's leads, a
    # roster of up to 10,000 people, each written and audited (over the request time limit
    # on two busy cores). Their answers are tested in tests/router/test_replay.py and
    # test_access.py (the import); their documents are checked above.
    "router": ["--exclude-path", "/v1/rules/replay", "--exclude-path", "/v1/roster/import"],
}
SCHEMATHESIS = "from schemathesis.cli import schemathesis; schemathesis()"


@pytest.fixture(scope="module")
def system(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningSystem]:
    with running_system(
        bootstrap_servers=broker.bootstrap_servers,
        data_dir=tmp_path_factory.mktemp("contracts"),
        topic_prefix=f"contracts{uuid.uuid4().hex[:6]}",
        sla_seconds=60,
    ) as running:
        yield running


def document(system: RunningSystem, service: str) -> dict[str, Any]:
    answer = httpx.get(f"{system.url(service)}/openapi.json", timeout=10)
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_each_openapi_document_is_valid_and_documents_its_errors(
    system: RunningSystem, service: str
) -> None:
    found = document(system, service)
    validate(found)
    assert '"#/$defs/' not in json.dumps(found)
    off_contract = []
    for path, item in found["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            documents = set(body["content"]) & {"application/json", "application/yaml"} if (
                body is not None) else set()
            if documents and not body.get("required"):
                off_contract.append(f"{method.upper()} {path}: body not required")
            for status, response in operation["responses"].items():
                kinds = set(response.get("content", {}))
                if status[0] in "45" and not kinds <= {PROBLEM_MEDIA_TYPE, "text/html"}:
                    off_contract.append(f"{method.upper()} {path} {status}: {sorted(kinds)}")
                if status[0] in "45" and not kinds:
                    off_contract.append(f"{method.upper()} {path} {status}: no content")
            if operation.get("parameters") or body is not None:
                assert "422" in operation["responses"], f"{method.upper()} {path}"
            assert "503" in operation["responses"], f"{method.upper()} {path}"
    assert off_contract == []


def schemathesis_run(system: RunningSystem, service: str, report: Path) -> list[str]:
    """Run Schemathesis against `service`: the first phases, then the stateful one. Returns
    what went wrong (empty when nothing did)."""
    base = [
        sys.executable, "-c", SCHEMATHESIS, "run", f"{system.url(service)}/openapi.json",
        "--checks", "all", "--exclude-checks", LEFT_OUT[service],
        "--header", f"Authorization: Bearer {system.admin_token}",
        "--seed", SEED, "--no-color", "--request-timeout", "30", "--workers", "1",
        *NOT_FUZZED.get(service, []),
    ]
    runs = {
        "examples,coverage,fuzzing": ["--max-examples", "8", "--max-time", str(SECONDS)],
        "stateful": ["--max-time", str(SECONDS * 3 // 5)],
    }
    problems = []
    for phases, limits in runs.items():
        outcome = subprocess.run(
            [*base, "--phases", phases, *limits], capture_output=True, text=True,
            timeout=SECONDS * 3, check=False, cwd=report.parent,  # its cache, out of the tree
        )
        report.write_text(report.read_text() + outcome.stdout if report.exists()
                          else outcome.stdout)
        if outcome.returncode != 0:
            problems.append(f"{service} ({phases}): exit {outcome.returncode}\n"
                            f"{outcome.stdout[-6000:]}{outcome.stderr[-2000:]}")
        elif phases == "stateful" and "✅ Stateful" not in outcome.stdout:
            problems.append(f"{service}: the stateful phase did not run\n"
                            f"{outcome.stdout[-3000:]}")
    return problems


def test_schemathesis_finds_nothing_against_the_running_services(
    system: RunningSystem, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(len(SERVICES)) as pool:
        found = list(pool.map(
            lambda service: schemathesis_run(system, service, tmp_path / f"{service}.txt"),
            SERVICES))
    problems = [problem for service_problems in found for problem in service_problems]
    assert not problems, "\n\n".join(problems)


# Each case Schemathesis or a person found, as a plain request.

BIG = 2**63


def problem_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    found: dict[str, Any] = answer.json()
    return found


def fields_of(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


@pytest.fixture(scope="module")
def client(system: RunningSystem) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, headers=system.admin_headers) as admin:
        yield admin


def test_an_integer_no_column_holds_is_refused(system: RunningSystem,
                                               client: httpx.Client) -> None:
    router = system.url("router")
    person = {"name": "Big", "email": f"big.{uuid.uuid4().hex[:6]}@seller.example"}
    created = client.post(f"{router}/v1/people", json=person)
    assert created.status_code == 201, created.text
    person_id = created.json()["id"]
    answers = [
        client.post(f"{router}/v1/people", json={**person, "email": "b2@seller.example",
                                                 "capacity": BIG}),
        client.patch(f"{router}/v1/people/{person_id}", json={"capacity": BIG}),
        client.post(f"{router}/v1/roster/import", content=(
            f"people:\n  - name: Big\n    email: b3@seller.example\n    capacity: {BIG}\n"),
            headers={"Content-Type": "application/yaml"}),
    ]
    for answer in answers:
        assert any(field.endswith("capacity") for field in fields_of(problem_of(answer, 422)))
    rules = {"rules": [{"id": "all", "sla": {"accept_seconds": 1e300, "contact_seconds": 60}}]}
    assert "rules.0.sla.accept_seconds" in fields_of(
        problem_of(client.put(f"{router}/v1/rules", json=rules), 422))


def test_a_number_is_no_date_time_and_no_boolean(system: RunningSystem,
                                                 client: httpx.Client) -> None:
    signal = client.post(f"{system.url('ingest')}/v1/signals", json={
        "email": "when@acme.example", "type": "page_view", "occurred_at": 0})
    assert fields_of(problem_of(signal, 422)) == {"occurred_at"}
    preview = client.post(f"{system.url('scorer')}/v1/scoring-model/preview", json={
        "lead": {"email": "when@acme.example"}, "at": 0})
    assert fields_of(problem_of(preview, 422)) == {"at"}
    rejections = client.get(f"{system.url('scorer')}/v1/reports/rejections",
                            params={"since": "1700000000"})
    assert fields_of(problem_of(rejections, 422)) == {"since"}
    report = client.get(f"{system.url('router')}/v1/reports/sla", params={"until": "0.5"})
    assert fields_of(problem_of(report, 422)) == {"until"}
    sdr = client.post(f"{system.url('router')}/v1/sdrs", json={
        "name": "Zero", "email": "zero@seller.example",
        "webhook_url": "https://hooks.seller.example/zero", "active": 0})
    assert fields_of(problem_of(sdr, 422)) == {"active"}
    lead = client.post(f"{system.url('ingest')}/v1/leads", json={
        "email": "flag@acme.example", "demo_requested": 1})
    assert fields_of(problem_of(lead, 422)) == {"demo_requested"}
    flags_for_numbers = client.post(f"{system.url('ingest')}/v1/leads", json={
        "email": "flag@acme.example", "annual_revenue": False, "employee_count": True})
    assert fields_of(problem_of(flags_for_numbers, 422)) == {"annual_revenue", "employee_count"}
    fine = client.get(f"{system.url('router')}/v1/reports/sla",
                      params={"until": "2026-01-05T09:00:00+00:00"})
    assert fine.status_code == 200, fine.text


def test_a_blank_optional_lead_field_is_an_absent_one(system: RunningSystem,
                                                      client: httpx.Client) -> None:
    ingest = system.url("ingest")
    email = f"blank.{uuid.uuid4().hex[:6]}@acme.example"
    first = client.post(f"{ingest}/v1/leads", json={
        "email": email, "website": "acme.example", "phone": "+33 1 23 45 67 89",
        "language": "fr", "country": "FR", "name": "Ada"})
    assert first.status_code == 202, first.text
    blanks = {field: "" for field in ("website", "phone", "language", "country", "name",
                                      "company", "job_title", "source", "industry")}
    again = client.post(f"{ingest}/v1/leads", json={
        "email": email, **blanks, "attribution": {"utm_source": " "},
        "consent": {"legal_basis": ""}})
    assert again.status_code == 202, again.text
    lead = client.get(f"{ingest}/v1/leads/{first.json()['lead_id']}").json()
    assert (lead["website"], lead["phone"], lead["language"], lead["country"], lead["name"]) == (
        "acme.example", "+33123456789", "fr", "FR", "Ada")
    only_blanks = client.post(f"{ingest}/v1/leads", json={"email": f"x{email}", **blanks})
    assert only_blanks.status_code == 202, only_blanks.text
    assert problem_of(client.post(f"{ingest}/v1/leads", json={"email": " "}), 422)


@pytest.mark.parametrize(("service", "path"), [
    ("ingest", "/v1/leads"), ("scorer", "/v1/scoring-model/preview"), ("router", "/v1/teams")])
def test_a_body_that_is_not_utf8_is_the_same_422_everywhere(
    system: RunningSystem, client: httpx.Client, service: str, path: str
) -> None:
    answer = client.post(f"{system.url(service)}{path}", content=b'{"name": "\xff\xfe"}',
                         headers={"Content-Type": "application/json"})
    assert problem_of(answer, 422)["errors"] == [
        {"field": "body", "in": "body", "message": "not UTF-8 at byte 10"}]


def test_no_internal_text_in_an_answer(system: RunningSystem, client: httpx.Client) -> None:
    answer = client.post(f"{system.url('router')}/v1/teams", json={
        "name": "Fun", "working_hours": {"funday": ["09:00-17:00"]}})
    [error] = problem_of(answer, 422)["errors"]
    assert "unknown day 'funday'" in error["message"]
    assert "tuple" not in answer.text
    hours = client.post(f"{system.url('router')}/v1/teams", json={
        "name": "Fun", "working_hours": {"mon": ["nine-five"]}})
    assert "such as '09:00-17:30'" in problem_of(hours, 422)["errors"][0]["message"]


@pytest.mark.parametrize(("service", "path", "methods"), [
    ("router", "/v1/people", "GET, POST"),
    ("router", "/v1/rules", "GET, PUT"),
    ("scorer", "/v1/scoring-model", "GET, PUT"),
    ("ingest", "/v1/leads/x", "DELETE, GET"),
    # A path without parameters comes first, as in OpenAPI (found by Schemathesis).
    ("ingest", "/v1/leads/batch", "POST"),
])
def test_a_405_allows_every_method_of_the_path(
    system: RunningSystem, client: httpx.Client, service: str, path: str, methods: str
) -> None:
    answer = client.request("OPTIONS", f"{system.url(service)}{path}")
    problem_of(answer, 405)
    assert answer.headers["allow"] == methods


def test_an_action_links_token_opens_nothing_but_its_action(
    system: RunningSystem
) -> None:
    router = system.url("router")
    for path in ("/v1/queue", "/v1/people", f"/v1/assignments/{uuid.uuid4()}"):
        answer = httpx.get(f"{router}{path}", params={"token": "not-a-link"}, timeout=10)
        assert problem_of(answer, 401)["status"] == 401, path
