"""What the endpoints get injected: ingest's context, and the guards of its routes.

The source, erasure and lead-reading routes take the admin token. The lead and signal posts
take the admin token, or the API key of an `api` source: `Authorization: Bearer <one of the
source's secrets>` with `X-Source-Key: <its key>`, so a marketing tool posts without the admin
token, and its key can be rotated (several secrets at once) or revoked in the source alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from services.ingest.service import IngestContext
from shared.auth import (
    AUTH_PROBLEMS,
    admin_caller,
    admin_tokens,
    admit,
    bearer_token,
    guard_role,
    require_admin,
    token_matches,
    unauthorized,
)
from shared.runtime import ServiceRuntime

SUBMITTER_ROLE = "source"


async def ingest_context(request: Request) -> IngestContext:
    # async: FastAPI would run a plain function in its thread pool, a thread hop per request.
    context: IngestContext = request.app.state.ingest
    return context


ContextDep = Annotated[IngestContext, Depends(ingest_context)]


@guard_role(SUBMITTER_ROLE)
async def require_submitter(request: Request) -> None:
    """The admin token, or the API key of the `api` source named by `X-Source-Key`."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized("Send `Authorization: Bearer <token>`: the admin token, or a "
                           "source's API key with `X-Source-Key`.")
    if token_matches(token, admin_tokens(request)):
        admit(admin_caller(token))
        return
    key = request.headers.get("x-source-key")
    if key is None or not await _source_accepts(request, key, token):
        raise unauthorized("The bearer token is neither the admin token nor an API key of "
                           "the source named by `X-Source-Key`.")
    admit(f"source:{key}")


async def _source_accepts(request: Request, key: str, token: str) -> bool:
    context: IngestContext = request.app.state.ingest
    source = context.sources.file_sources.get(key)
    if source is None:
        runtime: ServiceRuntime = request.app.state.runtime
        async with runtime.db.reading() as session:
            source = await context.sources.find(session, key)
    return source is not None and source.kind == "api" and token_matches(token, source.secrets)


AdminDep = Depends(require_admin)
SubmitterDep = Depends(require_submitter)
ADMIN_PROBLEMS: dict[int | str, dict[str, Any]] = dict(AUTH_PROBLEMS)
