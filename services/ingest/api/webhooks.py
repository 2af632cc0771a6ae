"""Vendor webhooks: `POST /v1/webhooks/{source_key}`.

Order matters: size limit, source, content type, signature over the raw bytes, and only then
parsing. A request that fails the signature gets `401` and leaves no trace in the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from services.ingest import webhooks
from services.ingest.api.dependencies import ContextDep
from services.ingest.api.route import IngestRoute
from services.ingest.bodies import raw_text, read_body, require_media_type, storable
from services.ingest.signatures import SignatureError
from services.ingest.sources import WEBHOOK_KINDS, Source, SourceKey
from services.ingest.vendors import Delivery, Entry, PayloadError
from services.ingest.vendors.registry import ADAPTERS, MEDIA_TYPES
from services.ingest.webhooks import DeliveryResult
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["webhooks"], route_class=IngestRoute)

PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or bad signature; nothing was written"},
    404: {"description": "No webhook source has this key"},
    413: {"description": "Body over the webhook size limit"},
    415: {"description": "Content type the source does not send"},
    422: {"description": "Payload not in the vendor's documented shape"},
}


@routes.post(
    "/webhooks/{source_key}",
    status_code=202,
    response_model=DeliveryResult,
    summary="Receive a vendor webhook (HubSpot, Typeform, Webflow, Zapier, Standard Webhooks)",
    responses={200: {"description": "Every entry was a replay", "model": DeliveryResult},
               **PROBLEMS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
    }}},
)
async def receive_webhook(
    source_key: Annotated[SourceKey, Path()],
    request: Request,
    runtime: RuntimeDep,
    context: ContextDep,
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:
    """Verify the delivery, then store one lead per entry (replays change nothing).

    `202` lists each entry's outcome: `created`, `merged`, `unchanged`, `duplicate` (a replay),
    `unmatched` (no usable email: kept for audit, no lead), or `queued` (a thin HubSpot
    event of a source with a `crm_token`: the contact is fetched from HubSpot's CRM and
    becomes a lead then).
    """
    body = await read_body(request, context.settings.webhook_max_bytes)
    async with runtime.db.reading() as session:
        source = await context.sources.find(session, source_key)
    if source is None or source.kind not in WEBHOOK_KINDS:
        raise ProblemError(
            404, "Source not found", f"No webhook source has the key {source_key!r}."
        )
    require_media_type(request, *MEDIA_TYPES.get(source.kind, ("application/json",)))
    adapter = ADAPTERS[source.kind]
    delivery = Delivery(
        method=request.method, url=str(request.url), headers=request.headers, body=body,
        signing_url=str(source.signing_url) if source.signing_url else None,
    )
    try:
        adapter.verify(delivery, source.secrets, context.clock.now())
    except SignatureError as error:
        raise ProblemError(401, "Bad signature", str(error), slug="bad-signature") from None
    try:
        entries = [
            Entry(external_id=storable(entry.external_id), fields=storable(entry.fields),
                  contact_id=entry.contact_id)
            for entry in adapter.entries(delivery)
        ]
    except PayloadError as error:
        raise ProblemError(422, "Invalid payload", str(error), slug="invalid-payload") from None
    result = await _store(runtime, context, source, entries, body, x_correlation_id)
    return JSONResponse(result.model_dump(), status_code=200 if result.all_duplicates else 202)


async def _store(
    runtime: RuntimeDep, context: ContextDep, source: Source, entries: list[Entry], body: bytes,
    correlation_id: str | None,
) -> DeliveryResult:
    raw = raw_text(body)
    for attempt in (1, 2):
        try:
            async with runtime.db.transaction() as session:
                return await webhooks.receive(
                    session, context, source, entries, channel="webhook", raw=raw,
                    correlation_id=correlation_id,
                )
        except IntegrityError:
            # The same delivery, racing this one, committed first: the retry sees a replay.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
