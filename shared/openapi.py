"""Every service's OpenAPI document says what its answers are: `document_problems(app)`.

FastAPI documents a route's `422` as `application/json` (its own `HTTPValidationError`) and
knows nothing of the errors `shared.problems` answers on every route. After FastAPI builds the
document, every operation gets:
- `422` when it takes parameters or a body, `503` (database outage, with `Retry-After`) always;
- every `4xx`/`5xx` answered as JSON documented as `application/problem+json` with the shared
  `Problem` schema (responses documented as another type, such as an HTML page, are kept);
- schemas a route put in `openapi_extra` with their own `$defs` (a pydantic model's JSON
  schema) moved to `components/schemas`, so that every `$ref` resolves in the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.problems import PROBLEM_MEDIA_TYPE, PROBLEM_SCHEMA

METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before trying again", "schema": {"type": "integer"},
    "required": True,
}
INVALID = {"description": "Invalid fields, one entry per field"}
UNAVAILABLE = {"description": "Database unreachable; retry after Retry-After",
               "headers": {"Retry-After": RETRY_AFTER}}


def document_problems(app: FastAPI) -> None:
    """Wrap `app.openapi` so the document it builds (once) lists every error as it is sent."""
    build = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if done:
            return done[0]
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", PROBLEM_SCHEMA)
        hoist_defs(document, schemas)
        for item in document.get("paths", {}).values():
            for method, operation in item.items():
                if method in METHODS:
                    _document_errors(operation)
        if "HTTPValidationError" in schemas and "HTTPValidationError" not in str(
            document["paths"]
        ):
            schemas.pop("HTTPValidationError")
            schemas.pop("ValidationError", None)
        app.openapi_schema = document
        done.append(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if operation.get("parameters") or operation.get("requestBody"):
        responses.setdefault("422", dict(INVALID))
    responses.setdefault("503", dict(UNAVAILABLE))
    for status, response in list(responses.items()):
        if str(status)[0] not in "45":
            continue
        content = response.get("content") or {}
        kept = {kind: value for kind, value in content.items()
                if "json" not in kind or kind == PROBLEM_MEDIA_TYPE}
        if not kept or "application/json" in content:
            kept = {**kept, PROBLEM_MEDIA_TYPE: {"schema": dict(PROBLEM_REF)}}
        responses[status] = {**response, "content": kept}
        if str(status) in {"429", "503"}:
            headers = responses[status].setdefault("headers", {})
            headers.setdefault("Retry-After", RETRY_AFTER)


def hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move every `$defs` below `node` into `schemas`, pointing its references there."""
    if isinstance(node, list):
        for item in node:
            hoist_defs(item, schemas)
        return
    if not isinstance(node, dict):
        return
    definitions = node.pop("$defs", None)
    if definitions:
        renamed = {name: _free_name(name, definition, schemas)
                   for name, definition in definitions.items()}
        _point_refs(node, renamed)
        for name, definition in definitions.items():
            _point_refs(definition, renamed)
            hoist_defs(definition, schemas)
            schemas[renamed[name]] = definition
    for value in node.values():
        hoist_defs(value, schemas)


def _free_name(name: str, definition: Any, schemas: dict[str, Any]) -> str:
    candidate, number = name, 1
    while candidate in schemas and schemas[candidate] != definition:
        number += 1
        candidate = f"{name}{number}"
    return candidate


def _point_refs(node: Any, renamed: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _point_refs(item, renamed)
    elif isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + renamed.get(reference[8:], reference[8:])
        for key, value in node.items():
            if key != "$defs":
                _point_refs(value, renamed)
