"""`leadrelay import FILE.csv --source KEY`: bulk import of leads through ingest's HTTP API.

The CSV needs a header row. Its encoding is UTF-8 (with or without a byte-order mark) when the
whole file decodes as UTF-8, else Windows-1252, what Excel saves as "CSV" on Western-European
Windows; its delimiter is the one of `,` `;` tab `|` its header line holds most of (Excel uses
`;` where the decimal mark is a comma, as in France). `--encoding` and `--delimiter` say
otherwise. It is read in two passes: one to count the rows for the progress bar, one to send
them. Columns map to canonical lead fields with the source's `field_mapping`
(read from `GET /v1/sources/{key}`), then ingest's own guesses (`First Name`, `E-mail`...);
columns that map to nothing are named and ignored. The source's default tags (channel,
campaign, source) fill what a row leaves empty.

Rows go to `POST /v1/leads/batch` (`X-Source-Key: KEY`) in batches of at most 500 items and
about 900 KiB, halved when ingest still answers `413`. Each row carries an `external_id`: its
own id column when it has one, else a hash of the source and the row's values. Ingest keeps
the ids per source and answers a known one with `duplicate` without storing anything, so
re-running an import (after a crash, or after fixing the bad rows) creates nothing twice.
Connection errors, `429` and `5xx` are retried with back-off; that is safe for the same reason.

Row numbers count the header as row 1, as a spreadsheet shows them. Exit status: 0 when every
row was imported, 1 when some rows were refused (listed, and written to `--errors FILE.csv`),
2 when the import could not run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.ingest.fields import CONSENT_FIELDS, canonical_fields, guess_field

MAX_ITEMS = 500
"""The batch endpoint's documented limit."""
MAX_BATCH_BYTES = 900 * 1024
"""Below ingest's default `LEADRELAY_BATCH_MAX_BYTES` (1 MiB), with room for the envelope."""
RETRIES = 8
SHOWN_ERRORS = 20
FALLBACK_ENCODING = "cp1252"
"""Windows-1252: what a file that is not UTF-8 most likely is (Excel's "CSV" on Windows)."""
DELIMITERS = ",;\t|"


class CsvImportError(Exception):
    """The import cannot run (file, source, ingest unreachable); the message says why."""


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    field: str
    message: str


@dataclass
class ImportReport:
    total: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def refused_rows(self) -> int:
        return len({error.row for error in self.errors})


@dataclass(frozen=True)
class Columns:
    """Which canonical field each CSV column feeds, and back, for the error report."""

    targets: dict[str, str]
    mapping: dict[str, str]

    @classmethod
    def of(cls, headers: list[str], mapping: Mapping[str, str]) -> Columns:
        targets = {}
        for header in headers:
            target = mapping.get(header) or guess_field(header)
            if target:
                targets[header] = target
        return cls(targets, dict(mapping))

    def ignored(self, headers: list[str]) -> list[str]:
        return [header for header in headers if header not in self.targets]

    def column_of(self, error_field: str) -> str:
        """The column behind an error's field (`country`, `attribution.utm_source`...)."""
        parts = error_field.split(".")
        target = parts[-1] if parts[0] in {"attribution", "consent"} and len(parts) > 1 else (
            parts[0])
        if parts[0] == "consent":
            target = {value: key for key, value in CONSENT_FIELDS.items()}.get(target, target)
        found = [header for header, mapped in self.targets.items() if mapped == target]
        return found[0] if found else ""


@dataclass(frozen=True)
class Source:
    key: str
    field_mapping: dict[str, str]
    defaults: dict[str, str]


@dataclass(frozen=True)
class CsvFormat:
    encoding: str
    delimiter: str

    @property
    def encoding_name(self) -> str:
        return {"utf-8-sig": "UTF-8", FALLBACK_ENCODING: "Windows-1252"}.get(
            self.encoding, self.encoding)

    def describe(self) -> str:
        delimiter = "tab" if self.delimiter == "\t" else repr(self.delimiter)
        return f"{self.encoding_name}, {delimiter}-separated"


def csv_format(path: Path, *, encoding: str | None = None,
               delimiter: str | None = None) -> CsvFormat:
    """How `path` is written: `encoding` and `delimiter` when given, else guessed."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CsvImportError(f"unknown encoding {encoding!r}") from None
    chosen = encoding or ("utf-8-sig" if _decodes(path, "utf-8-sig") else FALLBACK_ENCODING)
    if delimiter is None:
        with _open_csv(path, chosen) as file:
            try:
                header = file.readline()
            except UnicodeDecodeError:
                header = ""
        delimiter = max(DELIMITERS, key=header.count) if any(
            character in header for character in DELIMITERS) else ","
    return CsvFormat(chosen, delimiter)


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except OSError as error:
        raise CsvImportError(f"cannot read {path}: {error.strerror}") from None
    return True


def run_import(
    path: Path, source_key: str, *, ingest_url: str, admin_token: str | None = None,
    errors_path: Path | None = None, progress: TextIO | None = None, out: TextIO | None = None,
    client: httpx.Client | None = None, encoding: str | None = None,
    delimiter: str | None = None,
) -> int:
    """Import `path` for `source_key`; print the summary; the exit status."""
    progress = progress or sys.stderr
    out = out or sys.stdout
    own_client = client is None
    http = client or httpx.Client(base_url=ingest_url, timeout=60.0)
    try:
        report = import_file(path, source_key, http, admin_token=admin_token, progress=progress,
                             encoding=encoding, delimiter=delimiter)
    except CsvImportError as error:
        print(f"import failed: {error}", file=sys.stderr)
        print("(re-running the import is safe: rows already imported are skipped)",
              file=sys.stderr)
        return 2
    finally:
        if own_client:
            http.close()
    print_report(report, out)
    if errors_path is not None:
        write_errors(report.errors, errors_path)
        print(f"errors written to {errors_path}", file=out)
    return 1 if report.errors else 0


def import_file(
    path: Path, source_key: str, client: httpx.Client, *, admin_token: str | None = None,
    progress: TextIO | None = None, encoding: str | None = None, delimiter: str | None = None,
) -> ImportReport:
    progress = progress or sys.stderr
    if admin_token:  # the lead posts need it as much as reading the source
        client.headers["Authorization"] = f"Bearer {admin_token}"
    source = fetch_source(client, source_key, admin_token)
    found = csv_format(path, encoding=encoding, delimiter=delimiter)
    report = ImportReport(total=count_rows(path, found))
    print(f"reading {path.name}: {found.describe()}", file=progress)
    bar = Progress(report.total, progress)
    with _open_csv(path, found.encoding) as file:
        reader = csv.DictReader(file, delimiter=found.delimiter)
        headers = [header for header in (reader.fieldnames or []) if header is not None]
        columns = Columns.of(headers, source.field_mapping)
        if "email" not in columns.targets.values():
            raise CsvImportError(
                f"{path}: no column holds the email (columns: {', '.join(headers)})"
            )
        report.ignored_columns = columns.ignored(headers)
        for batch in batches(rows_of(reader, columns, source, report)):
            send(client, source.key, batch, columns, report)
            bar.advance_to(batch[-1].number - 1)
    bar.finish()
    report.errors.sort(key=lambda error: error.row)
    return report


def fetch_source(client: httpx.Client, key: str, admin_token: str | None) -> Source:
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    try:
        answer = client.get(f"/v1/sources/{key}", headers=headers)
    except httpx.HTTPError as error:
        raise CsvImportError(f"ingest unreachable at {client.base_url}: {error}") from None
    if answer.status_code == 404:
        raise CsvImportError(f"ingest has no source {key!r}; register it first")
    if answer.status_code == 401:
        raise CsvImportError("ingest wants the admin token: pass --admin-token or set "
                           "LEADRELAY_ADMIN_TOKEN")
    if answer.status_code != 200:
        raise CsvImportError(f"reading source {key!r}: {answer.status_code} {answer.text[:200]}")
    document = answer.json()
    return Source(key=key, field_mapping=dict(document.get("field_mapping") or {}),
                  defaults=dict(document.get("defaults") or {}))


def count_rows(path: Path, found: CsvFormat) -> int:
    """The data rows of the file, which is read whole first: nothing is sent from a file that
    does not decode or is not CSV."""
    with _open_csv(path, found.encoding) as file:
        reader = csv.reader(file, delimiter=found.delimiter)
        try:
            return max(sum(1 for _ in reader) - 1, 0)
        except UnicodeDecodeError:
            raise CsvImportError(
                f"{path} is not {found.encoding_name} (save it as CSV UTF-8, or name its "
                "encoding with --encoding)") from None
        except csv.Error as error:
            raise CsvImportError(f"{path}, line {reader.line_num}: {error}") from None


def _open_csv(path: Path, encoding: str) -> TextIO:
    try:
        return path.open(newline="", encoding=encoding)
    except OSError as error:
        raise CsvImportError(f"cannot read {path}: {error.strerror}") from None


@dataclass(frozen=True)
class Row:
    number: int
    item: dict[str, Any]


def rows_of(
    reader: csv.DictReader[str], columns: Columns, source: Source, report: ImportReport
) -> Iterator[Row]:
    for index, values in enumerate(reader):
        number = index + 2
        extra = values.pop(None, None)  # DictReader's restkey: the values past the header's
        if isinstance(extra, list) and extra:
            report.statuses["invalid"] += 1
            report.errors.append(RowError(number, "", "", (
                f"{len(values) + len(extra)} values for {len(values)} columns")))
            continue
        yield Row(number, lead_item(values, columns, source))


def lead_item(values: Mapping[str, str], columns: Columns, source: Source) -> dict[str, Any]:
    """The batch item of one row, with its stable `external_id`."""
    item = canonical_fields(values, columns.mapping)
    defaults = source.defaults
    if defaults.get("source"):
        item.setdefault("source", defaults["source"])
    tags = {key: defaults[key] for key in ("channel", "campaign") if defaults.get(key)}
    if tags:
        item["attribution"] = {**tags, **item.get("attribution", {})}
    if not item.get("external_id"):
        cells = sorted((name, (value or "").strip()) for name, value in values.items())
        content = json.dumps([source.key, cells], ensure_ascii=False)
        item["external_id"] = "csv:" + hashlib.sha256(content.encode()).hexdigest()[:40]
    else:
        item["external_id"] = str(item["external_id"]).strip()[:255]
    return item


def batches(rows: Iterator[Row]) -> Iterator[list[Row]]:
    batch: list[Row] = []
    size = 0
    for row in rows:
        row_size = len(json.dumps(row.item)) + 2
        if batch and (len(batch) >= MAX_ITEMS or size + row_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_size
    if batch:
        yield batch


def send(
    client: httpx.Client, source_key: str, batch: list[Row], columns: Columns,
    report: ImportReport,
) -> None:
    answer = post_with_retries(client, source_key, [row.item for row in batch])
    if answer.status_code == 413 and len(batch) > 1:
        half = len(batch) // 2
        send(client, source_key, batch[:half], columns, report)
        send(client, source_key, batch[half:], columns, report)
        return
    if answer.status_code != 202:
        raise CsvImportError(
            f"ingest refused a batch: {answer.status_code} {_problem_text(answer)}"
        )
    for result in answer.json()["results"]:
        row = batch[result["index"]]
        report.statuses[result["status"]] += 1
        for error in result.get("errors") or []:
            report.errors.append(RowError(
                row.number, columns.column_of(error["field"]), error["field"], error["message"]
            ))


def post_with_retries(
    client: httpx.Client, source_key: str, items: list[dict[str, Any]]
) -> httpx.Response:
    wait = 0.5
    for attempt in range(1, RETRIES + 1):
        try:
            answer = client.post("/v1/leads/batch", json={"leads": items},
                                 headers={"X-Source-Key": source_key})
        except httpx.TransportError as error:
            if attempt == RETRIES:
                raise CsvImportError(f"ingest unreachable: {error}") from None
        else:
            if answer.status_code != 429 and answer.status_code < 500:
                return answer
            if attempt == RETRIES:
                return answer
            wait = max(wait, _retry_after(answer))
        time.sleep(wait)
        wait = min(wait * 2, 10.0)
    raise AssertionError("unreachable")


def _retry_after(answer: httpx.Response) -> float:
    value = answer.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.isdigit() else 0.0


def _problem_text(answer: httpx.Response) -> str:
    try:
        document = answer.json()
    except ValueError:
        return answer.text[:200]
    return str(document.get("detail") or document.get("title") or document)[:300]


class Progress:
    """A bar redrawn in place on a terminal; a line every 10 % (or 5 s) anywhere else."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self.next_step = 10
        self.last_line = time.monotonic()
        self.shown = -1

    def advance_to(self, done: int) -> None:
        self.done = done
        percent = 100 * self.done // self.total if self.total else 100
        if self.tty:
            filled = percent * 30 // 100
            self.stream.write(f"\rimporting [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}% "
                              f"{self.done}/{self.total} rows")
        elif percent >= self.next_step or time.monotonic() - self.last_line >= 5:
            self.stream.write(f"imported {self.done}/{self.total} rows ({percent}%)\n")
            self.next_step = (percent // 10 + 1) * 10
            self.last_line = time.monotonic()
        else:
            return
        self.shown = self.done
        self.stream.flush()

    def finish(self) -> None:
        if self.shown != self.total:
            self.next_step = 0
            self.advance_to(self.total)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def print_report(report: ImportReport, out: TextIO) -> None:
    counts = ", ".join(
        f"{report.statuses[status]} {status}"
        for status in ("created", "merged", "unchanged", "duplicate", "invalid")
        if report.statuses[status]
    )
    print(f"{report.total} rows: {counts or 'nothing to import'}", file=out)
    if report.ignored_columns:
        print(f"ignored columns (no lead field): {', '.join(report.ignored_columns)}", file=out)
    if not report.errors:
        return
    print(f"{report.refused_rows} rows refused:", file=out)
    for error in report.errors[:SHOWN_ERRORS]:
        where = f", column {error.column!r}" if error.column else (
            f", field {error.field!r}" if error.field else "")
        print(f"  row {error.row}{where}: {error.message}", file=out)
    if len(report.errors) > SHOWN_ERRORS:
        print(f"  ... and {len(report.errors) - SHOWN_ERRORS} more", file=out)


def write_errors(errors: list[RowError], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "column", "field", "message"])
        for error in errors:
            writer.writerow([error.row, error.column, error.field, error.message])
