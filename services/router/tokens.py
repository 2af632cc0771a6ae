"""People's API tokens, for the admin: `/v1/people/{id}/tokens`.

A person gets one token on joining the roster; the admin issues more (a new laptop, a rotation:
issue the new one, move the person over, revoke the old one), lists them (never the secret) and
revokes any of them. A token is shown once, in the answer that issues it; only its SHA-256 is
stored. A revoked token is refused at once, on every instance (tokens are looked up on each
request, never cached).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import roster_repository
from services.router.access import new_token, token_hash
from services.router.api_dependencies import ERRORS, AdminDep, ContextDep
from services.router.models import AUDIT
from shared import audit
from shared.app import RuntimeDep
from shared.db import new_id
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1/people/{person_id}/tokens", tags=["roster"], responses=ERRORS)
PersonId = Annotated[str, Path(max_length=36)]


class TokenRequest(BaseModel):
    label: str = Field(default="issued", min_length=1, max_length=200,
                       description="What the token is for (a device, a tool)")


class TokenView(BaseModel):
    id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


class TokenIssued(TokenView):
    token: str = Field(description="The bearer token; shown once, never again")


@routes.post("", status_code=status.HTTP_201_CREATED, response_model=TokenIssued,
             summary="Issue a person another API token (shown once)")
async def issue_token(person_id: PersonId, body: TokenRequest, runtime: RuntimeDep,
                      context: ContextDep, _: AdminDep) -> TokenIssued:
    token, now = new_token(), context.clock.now()
    values = {"id": new_id(), "person_id": person_id, "token_hash": token_hash(token),
              "label": body.label, "created_at": now}
    async with runtime.db.transaction() as session:
        await _existing(session, person_id)
        await roster_repository.insert_person_token(session, values)
        await audit.record(session, AUDIT, at=now, action="token.issued",
                           subject=f"person:{person_id}",
                           after={"token_id": values["id"], "label": body.label})
    return TokenIssued(id=values["id"], label=body.label, created_at=now, revoked_at=None,
                       token=token)


@routes.get("", response_model=list[TokenView], summary="A person's tokens, without the secrets")
async def list_tokens(person_id: PersonId, runtime: RuntimeDep, _: AdminDep) -> list[TokenView]:
    async with runtime.db.reading() as session:
        await _existing(session, person_id)
        rows = await roster_repository.list_person_tokens(session, person_id)
    return [TokenView.model_validate(dict(row)) for row in rows]


@routes.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Revoke one of a person's tokens: refused from now on")
async def revoke_token(person_id: PersonId, token_id: Annotated[str, Path(max_length=36)],
                       runtime: RuntimeDep, context: ContextDep, _: AdminDep) -> Response:
    async with runtime.db.transaction() as session:
        revoked = await roster_repository.revoke_person_token(
            session, person_id, token_id, context.clock.now())
        if revoked is not None:
            await audit.record(
                session, AUDIT, at=context.clock.now(), action="token.revoked",
                subject=f"person:{person_id}", before={"token_id": token_id, "revoked": False},
                after={"token_id": token_id, "revoked": True})
    if revoked is None:
        raise ProblemError(404, "Token not found", f"{person_id!r} has no token {token_id!r}.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _existing(session: AsyncSession, person_id: str) -> None:
    if await roster_repository.find_sdr(session, person_id) is None:
        raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
