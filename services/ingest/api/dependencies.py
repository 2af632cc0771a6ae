"""What the endpoints get injected: ingest's context, and the admin check of the source API."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from services.ingest.service import IngestContext
from shared.problems import ProblemError


async def ingest_context(request: Request) -> IngestContext:
    # async: FastAPI would run a plain function in its thread pool, a thread hop per request.
    context: IngestContext = request.app.state.ingest
    return context


ContextDep = Annotated[IngestContext, Depends(ingest_context)]


def require_admin(
    context: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """When `LEADRELAY_ADMIN_TOKEN` is set, the caller must present it as a bearer token."""
    expected = context.settings.admin_token
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise ProblemError(
            401, "Unauthorized", "This API needs the admin bearer token.",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)
ADMIN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "The admin bearer token is missing or wrong"}
}
