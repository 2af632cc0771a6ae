"""HTML forms: `POST /v1/forms/{form_key}` (and its CORS preflight).

Answers `303` to the form's thank-you page, or JSON when the page posts with
`Accept: application/json`. Per-IP and per-form rate limits answer `429` with `Retry-After`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from services.ingest import service
from services.ingest.api.dependencies import ContextDep
from services.ingest.api.route import IngestRoute
from services.ingest.bodies import raw_text, read_body, require_media_type, storable
from services.ingest.fields import canonical_fields, lenient_submission, submission_errors
from services.ingest.forms import form_fields, is_bot, origin_allowed
from services.ingest.service import Intake
from services.ingest.sources import Source, SourceKey
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["forms"], route_class=IngestRoute)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class FormAnswer(BaseModel):
    """The JSON answer: the stored lead, or only `received` for a post the honeypot caught."""

    status: Literal["created", "merged", "unchanged", "received"]
    lead_id: str | None = None


async def _form_source(runtime: RuntimeDep, context: ContextDep, key: str) -> Source:
    async with runtime.db.reading() as session:
        source = await context.sources.find(session, key)
    if source is None or source.kind != "form":
        raise ProblemError(404, "Form not found", f"No form has the key {key!r}.")
    return source


def _cors(source: Source, origin: str | None) -> dict[str, str]:
    if origin is None or not origin_allowed(source, origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


@routes.options("/forms/{form_key}", include_in_schema=False)
async def preflight(
    form_key: Annotated[SourceKey, Path()], request: Request, runtime: RuntimeDep,
    context: ContextDep,
) -> Response:
    source = await _form_source(runtime, context, form_key)
    origin = request.headers.get("origin")
    if not origin_allowed(source, origin):
        raise ProblemError(403, "Origin not allowed", "This form does not accept posts from there.")
    return Response(status_code=204, headers={
        **_cors(source, origin), "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type, Accept", "Access-Control-Max-Age": "600",
    })


@routes.post(
    "/forms/{form_key}",
    status_code=303,
    response_class=RedirectResponse,
    summary="Receive an HTML form post",
    responses={
        202: {"description": "Stored (when the page asks for JSON, or has no thank-you page)",
              "model": FormAnswer},
        303: {"description": "Stored; go to the thank-you page"},
        403: {"description": "Origin not in the form's allow-list"},
        404: {"description": "No form has this key"},
        413: {"description": "Body over the form size limit"},
        415: {"description": "Not a form content type"},
        422: {"description": "No valid email (problem details, one entry per field)"},
        429: {"description": "Too many posts; see Retry-After"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {
        media: {"schema": {"type": "object", "properties": {"email": {"type": "string"}}}}
        for media in FORM_TYPES
    }}},
)
async def receive_form(
    form_key: Annotated[SourceKey, Path()], request: Request, runtime: RuntimeDep,
    context: ContextDep,
) -> Response:
    source = await _form_source(runtime, context, form_key)
    origin = request.headers.get("origin")
    if not origin_allowed(source, origin):
        raise ProblemError(403, "Origin not allowed", "This form does not accept posts from there.")
    client = request.client.host if request.client else "unknown"
    limits = context.form_limits
    for limiter, key in ((limits.per_ip, f"{form_key}:{client}"), (limits.per_form, form_key)):
        wait = limiter.retry_after(key)
        if wait:
            raise ProblemError(429, "Too many requests", "Try again later.", slug="rate-limited",
                               headers={"Retry-After": str(wait), **_cors(source, origin)})
    media = require_media_type(request, *FORM_TYPES)
    body = await read_body(request, context.settings.form_max_bytes)
    fields = await _parse(request, media, body)
    wants_json = "application/json" in request.headers.get("accept", "")
    if is_bot(source, fields):
        return _answer(source, origin, wants_json, None)
    try:
        submission = lenient_submission(
            canonical_fields(form_fields(source, fields), source.field_mapping)
        )
    except ValidationError as error:
        raise ProblemError(422, "Invalid request", "The form has invalid or missing fields.",
                           slug="invalid-request", errors=submission_errors(error),
                           headers=_cors(source, origin)) from None
    intake = Intake(channel="form", source_key=source.key, raw=raw_text(body),
                    defaults=source.tag_defaults())
    async with runtime.db.transaction() as session:
        accepted = await service.submit_lead(session, context, submission, intake)
    return _answer(source, origin, wants_json, accepted.model_dump())


async def _read_fields(request: Request, media: str, body: bytes) -> dict[str, Any]:
    if media == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise ProblemError(422, "Invalid request", "The form body is not UTF-8.") from None
    request._body = body  # read_body consumed the stream; let Starlette parse the copy
    try:
        form: FormData = await request.form(max_files=20, max_fields=200)
    except Exception as error:
        raise ProblemError(422, "Invalid request", "The multipart body cannot be read.") from error
    fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
    await form.close()
    return fields


async def _parse(request: Request, media: str, body: bytes) -> dict[str, Any]:
    """The form's fields, without the characters a database cannot store (NUL...)."""
    fields: dict[str, Any] = storable(await _read_fields(request, media, body))
    return fields


def _answer(
    source: Source, origin: str | None, wants_json: bool, result: dict[str, Any] | None
) -> Response:
    headers = _cors(source, origin)
    if wants_json or source.thank_you_url is None:
        return JSONResponse(result or {"status": "received"}, status_code=202, headers=headers)
    return RedirectResponse(str(source.thank_you_url), status_code=303, headers=headers)
