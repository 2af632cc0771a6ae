"""Reading request bodies within a size limit, refusing content types we do not read, and
keeping out text no database can store (NUL characters, unpaired surrogates)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from shared.problems import ProblemError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL refuses it in text and JSON) and unpaired surrogates (not UTF-8)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; `413` as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, "Body too large", f"The body exceeds the limit of {limit} bytes.", slug="too-large"
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_media_type(request: Request, *accepted: str) -> str:
    """The request's media type if it is one of `accepted`, else `415`."""
    found = media_type(request)
    if found not in accepted:
        raise ProblemError(
            415, "Unsupported media type",
            f"Send the body as {' or '.join(accepted)}, not {found or 'no content type'}.",
            slug="unsupported-media-type",
        )
    return found


def is_json(media: str) -> bool:
    """`application/json`, or any `application/<something>+json` (RFC 6839)."""
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def require_json(request: Request) -> None:
    """`415` unless the request declares a JSON body."""
    found = media_type(request)
    if not is_json(found):
        raise ProblemError(
            415, "Unsupported media type",
            f"Send the body as application/json, not {found or 'no content type'}.",
            slug="unsupported-media-type",
        )


def parse_json_body(body: bytes) -> Any:
    """The JSON document in `body`.

    `422` when it is not UTF-8 (RFC 8259 section 8.1) or holds text no database stores: NUL
    characters (PostgreSQL refuses them) or unpaired surrogates (not encodable as UTF-8), or
    when it is nested deeper than Python's recursion limit lets it be read.
    Invalid JSON raises `json.JSONDecodeError`, which FastAPI answers with its own `422`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid_body([{"field": "body", "in": "body",
                              "message": f"not UTF-8 at byte {error.start}"}]) from None
    try:
        document = json.loads(text)
        unstorable = list(_unstorable_paths(document, ()))
    except RecursionError:
        raise _invalid_body([{"field": "body", "in": "body",
                              "message": "JSON nested too deeply"}]) from None
    if unstorable:
        raise _invalid_body([
            {"field": ".".join(path) or "body", "in": "body",
             "message": "text must not contain NUL characters or unpaired surrogates"}
            for path in unstorable[:20]
        ])
    return document


def _unstorable_paths(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if _UNSTORABLE.search(key):
                yield (*path, "(key)")
            else:
                yield from _unstorable_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable_paths(item, (*path, str(index)))


def raw_text(body: bytes) -> str:
    """A body as text to keep for audit: invalid UTF-8 and NUL bytes replaced by U+FFFD."""
    return body.decode(errors="replace").replace("\x00", "\ufffd")


def storable(value: Any) -> Any:
    """`value` (a parsed form or payload) with NUL characters dropped and unpaired surrogates
    replaced, for the lenient channels (forms, webhooks) that keep what they can."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda found: "" if found[0] == "\x00" else "\ufffd", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def _invalid_body(errors: list[dict[str, str]]) -> ProblemError:
    return ProblemError(422, "Invalid request", "The body cannot be stored as it is.",
                        slug="invalid-request", errors=errors)
