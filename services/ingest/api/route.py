"""The route class of every ingest endpoint: JSON bodies checked before they are parsed, and
every error answer documented as the problem document it is.

A route that takes a JSON body refuses anything but `application/json` (or `application/*+json`)
with `415`, and a body over `LEADRELAY_MAX_BODY_BYTES` (64 KiB; `LEADRELAY_BATCH_MAX_BYTES`,
1 MiB, for the `.../batch` routes) with `413`, as soon as the declared length or the bytes read
pass it, before FastAPI parses anything. The body is parsed once, here: text that is not UTF-8
or that no database stores (NUL, unpaired surrogates) is a `422`, never a database error. An
endpoint of simple parameters is then called by `lean_handler` as long as the request is
valid; FastAPI's handler answers the rest.
Forms and webhooks read their bodies themselves (`bodies`), with their own limits.

Each route's OpenAPI lists `413`/`415` when it takes a JSON body, `422` when it has parameters,
`503` (database down) always, and gives every `4xx`/`5xx` it declares the
`application/problem+json` schema (and `Retry-After` to `429` and `503`), so what a client gets
is what the document says.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from services.ingest.api.lean_handler import lean_handler
from services.ingest.bodies import parse_json_body, read_body, require_json
from services.ingest.settings import IngestSettings
from shared.problems import PROBLEM_MEDIA_TYPE, PROBLEM_SCHEMA

RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before trying again", "schema": {"type": "integer"},
    "required": True,
}
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def body_limit(settings: IngestSettings, path: str) -> int:
    return settings.batch_max_bytes if path.endswith("/batch") else settings.max_body_bytes


class IngestRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        declared = dict(self.responses)
        if self.body_field is not None:
            declared.setdefault(413, {"description": "Body over the size limit"})
            declared.setdefault(415, {"description": "Body not sent as application/json"})
        if self.body_field is not None or get_flat_params(self.dependant):
            declared.setdefault(422, {"description": "Invalid fields, one entry per field"})
        declared.setdefault(503, {"description": "Database unreachable; retry after Retry-After"})
        self.responses = {
            status: _as_problem(status, response) if str(status)[0] in "45" else response
            for status, response in declared.items()
        }

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        path = self.path
        lean = lean_handler(self)

        async def checked(request: Request) -> Response:
            require_json(request)
            settings: IngestSettings = request.app.state.ingest.settings
            body = await read_body(request, body_limit(settings, path))
            request._body = body
            try:
                document = parse_json_body(body)
            except json.JSONDecodeError:
                return await handler(request)  # FastAPI's own 422 for JSON it cannot read
            request._json = document
            answer = None if lean is None else await lean(request, document)
            return answer if answer is not None else await handler(request)

        return checked


def _as_problem(status: int | str, response: dict[str, Any]) -> dict[str, Any]:
    if str(status) in {"429", "503"}:
        response = {**response, "headers": {"Retry-After": RETRY_AFTER, **response.get(
            "headers", {})}}
    if "content" in response or "model" in response:
        return response
    return {**response, "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
