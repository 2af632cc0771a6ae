"""Reading request bodies within a size limit, and refusing content types we do not read."""

from __future__ import annotations

from fastapi import Request

from shared.problems import ProblemError


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
