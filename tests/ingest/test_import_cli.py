"""`leadrelay import FILE.csv --source KEY` against a real ingest served by uvicorn on a free
port, with the real broker and database: mapping, chunking, the error report, safe re-runs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from leadrelay.broker import free_port
from leadrelay.cli import main
from leadrelay.importer import (
    Columns,
    CsvFormat,
    CsvImportError,
    Progress,
    Source,
    csv_format,
    lead_item,
    run_import,
)
from services.ingest.app import create_app
from services.ingest.models import OUTBOX, lead, submission
from services.ingest.settings import IngestSettings
from tests.ingest.conftest import table_rows
from tests.support import read_topic

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ADMIN = "admin-token-for-the-import-test"
GOOD_ROWS = 1100
HEADER = ["Work Email", "First Name", "Last Name", "Company", "Country", "Notes"]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """`app` behind a real uvicorn on a free port (lifespan included), in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "ingest did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def write_csv(path: Path) -> None:
    rows = [HEADER]
    rows += [[f"Import{n}@Acme{n % 7}.io", "Ada", f"N{n}", "Acme", "fr", "met at expo"]
             for n in range(GOOD_ROWS)]
    rows.insert(5, ["import3@acme3.io", "Ada", "N3", "Acme", "fr", "met at expo"])  # same lead
    rows.insert(10, ["not-an-email", "Bad", "Email", "", "", ""])
    rows.insert(20, ["country@acme.io", "Bad", "Country", "", "Atlantis", ""])
    rows.insert(30, ["extra@acme.io", "Too", "Many", "", "", "", "cells"])
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)


async def outbox_types(settings: IngestSettings) -> list[str]:
    return [row["event_type"] for row in await table_rows(settings, OUTBOX.events)]


def test_import_maps_reports_bad_rows_and_a_rerun_creates_nothing(
    settings: IngestSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = settings.model_copy(update={"admin_token": ADMIN})
    file = tmp_path / "leads.csv"
    write_csv(file)
    errors = tmp_path / "errors.csv"
    with served(create_app(config)) as url:
        registered = httpx.put(f"{url}/v1/sources/crm-export", headers={
            "Authorization": f"Bearer {ADMIN}"}, json={
            "kind": "api", "field_mapping": {"Work Email": "email"},
            "defaults": {"campaign": "expo-2026"}})
        assert registered.status_code == 201, registered.text
        command = ["import", str(file), "--source", "crm-export", "--ingest-url", url,
                   "--admin-token", ADMIN, "--errors", str(errors)]
        first_code = main(command)
        first = capsys.readouterr()
        leads_after_first = asyncio.run(table_rows(config, lead))
        submissions_after_first = len(asyncio.run(table_rows(config, submission)))
        events_after_first = asyncio.run(outbox_types(config))
        second_code = main(command)
        second = capsys.readouterr()
        unknown_source = main(["import", str(file), "--source", "nope", "--ingest-url", url,
                               "--admin-token", ADMIN])
        no_token = main(["import", str(file), "--source", "crm-export", "--ingest-url", url,
                         "--admin-token", "wrong-token-for-sure"])
        refused = capsys.readouterr()

    assert first_code == second_code == 1
    assert f"{GOOD_ROWS + 4} rows: {GOOD_ROWS} created, 1 unchanged, 3 invalid" in first.out
    assert "3 rows refused" in first.out
    assert "row 11, column 'Work Email':" in first.out
    assert "row 21, column 'Country':" in first.out
    assert "row 31: 7 values for 6 columns" in first.out
    assert "ignored columns (no lead field): Notes" in first.out
    assert "imported 501/1104 rows (45%)" in first.err
    assert first.err.endswith("imported 1104/1104 rows (100%)\n")
    with errors.open(newline="") as report:
        assert [line[:3] for line in csv.reader(report)] == [
            ["row", "column", "field"], ["11", "Work Email", "email"],
            ["21", "Country", "country"], ["31", "", ""]]

    assert len(leads_after_first) == GOOD_ROWS
    stored = {row["email"]: row for row in leads_after_first}["import42@acme0.io"]
    assert (stored["name"], stored["country"]) == ("Ada N42", "FR")
    assert stored["attribution"]["campaign"] == "expo-2026"
    assert submissions_after_first == GOOD_ROWS + 1
    assert events_after_first.count("lead.received") == GOOD_ROWS

    assert f"{GOOD_ROWS + 4} rows: {GOOD_ROWS + 1} duplicate, 3 invalid" in second.out
    assert len(asyncio.run(table_rows(config, lead))) == GOOD_ROWS
    assert len(asyncio.run(table_rows(config, submission))) == submissions_after_first
    assert asyncio.run(outbox_types(config)) == events_after_first
    published = asyncio.run(read_topic(config.kafka_bootstrap_servers, config.topics.leads,
                                       GOOD_ROWS))
    assert {event["type"] for event in published} == {"lead.received"}

    assert unknown_source == no_token == 2
    assert "ingest has no source 'nope'" in refused.err
    assert "admin token" in refused.err


def test_progress_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(200, stream)
    progress.advance_to(50)
    progress.advance_to(200)
    progress.finish()
    assert stream.getvalue() == (
        "\rimporting [#######.......................]  25% 50/200 rows"
        "\rimporting [##############################] 100% 200/200 rows\n"
    )


class FakeIngest:
    """An ingest that fails the first batch with 503 and refuses more than 2 items with 413."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, object]]] = []
        self.calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.path == "/v1/sources/crm"
            return httpx.Response(200, json={"field_mapping": {"CRM Id": "external_id"},
                                             "defaults": {"source": "crm"}})
        self.calls += 1
        leads = json.loads(request.content)["leads"]
        assert request.headers["x-source-key"] == "crm"
        if self.calls == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        if len(leads) > 2:
            return httpx.Response(413, json={"title": "Body too large"})
        self.batches.append(leads)
        return httpx.Response(202, json={"results": [
            {"index": index, "status": "created", "lead_id": f"id-{index}"}
            for index in range(len(leads))]})


def test_batches_are_retried_and_halved_and_ids_come_from_the_id_column(tmp_path: Path) -> None:
    file = tmp_path / "crm.csv"
    file.write_text("CRM Id,Email\n" + "".join(f" c{n} ,lead{n}@acme.io\n" for n in range(5)))
    fake = FakeIngest()
    out = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://x") as client:
        code = run_import(file, "crm", ingest_url="http://x", client=client, out=out,
                          progress=io.StringIO())
    assert code == 0, out.getvalue()
    assert "5 rows: 5 created" in out.getvalue()
    assert [len(batch) for batch in fake.batches] == [2, 1, 2]
    sent = [item for batch in fake.batches for item in batch]
    assert [item["external_id"] for item in sent] == [f"c{n}" for n in range(5)]
    assert {item["source"] for item in sent} == {"crm"}


def test_row_ids_hash_the_source_and_values_whatever_the_column_order() -> None:
    source = Source(key="crm", field_mapping={}, defaults={})
    other = Source(key="fair", field_mapping={}, defaults={})
    row = {"Email": "a@acme.io", "Name": "Ada "}
    columns = Columns.of(list(row), {})
    same = lead_item({"Name": "Ada", "Email": "a@acme.io"}, columns, source)
    assert lead_item(row, columns, source)["external_id"] == same["external_id"]
    assert lead_item(row, columns, other)["external_id"] != same["external_id"]
    assert lead_item({**row, "Name": "Bob"}, columns, source)["external_id"] != (
        same["external_id"])
    assert Columns.of(["E-mail", "Consent Email", "UTM Source"], {}).column_of(
        "consent.email") == "Consent Email"
    assert Columns.of(["E-mail", "UTM Source"], {}).column_of("attribution.utm_source") == (
        "UTM Source")


def test_an_excel_csv_in_windows_1252_with_semicolons_is_read_as_such(tmp_path: Path) -> None:
    file = tmp_path / "salon.csv"
    file.write_bytes("Email;Name;Company\nzoe@acme.fr;Zoë Lefèvre;Café & Cie\n".encode("cp1252"))
    fake = FakeIngest()
    progress = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://x") as client:
        code = run_import(file, "crm", ingest_url="http://x", client=client, out=io.StringIO(),
                          progress=progress)
    assert code == 0
    [[item]] = fake.batches
    assert (item["email"], item["name"], item["company"]) == (
        "zoe@acme.fr", "Zoë Lefèvre", "Café & Cie")
    assert "salon.csv: Windows-1252, ';'-separated" in progress.getvalue()


def test_the_format_is_guessed_unless_given(tmp_path: Path) -> None:
    file = tmp_path / "leads.csv"
    file.write_bytes("\ufeffEmail\tName, title\tCompany\na@b.io\tÅsa\tAcme\n".encode())
    assert csv_format(file) == CsvFormat("utf-8-sig", "\t")
    assert csv_format(file, encoding="latin-1", delimiter=",") == CsvFormat("latin-1", ",")
    (tmp_path / "one.csv").write_text("Email\na@b.io\n")
    assert csv_format(tmp_path / "one.csv").delimiter == ","
    with pytest.raises(CsvImportError, match="unknown encoding"):
        csv_format(file, encoding="klingon")


def test_a_file_that_does_not_decode_sends_nothing(tmp_path: Path) -> None:
    file = tmp_path / "broken.csv"
    file.write_bytes(b"Email,Name\nzoe@acme.io,Zo\x81\n")  # neither UTF-8 nor Windows-1252
    fake = FakeIngest()
    with httpx.Client(transport=httpx.MockTransport(fake.handle), base_url="http://x") as client:
        code = run_import(file, "crm", ingest_url="http://x", client=client, out=io.StringIO(),
                          progress=io.StringIO())
    assert code == 2
    assert fake.calls == 0
