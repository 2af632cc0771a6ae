"""`POST /v1/people/{id}/sign-in-links` (admin): a one-time link that signs a person in to the
console, to hand over or send by email. Shown once; only its SHA-256 is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from services.router import roster_repository
from services.router.api import ERRORS, AdminDep, ContextDep
from services.router.console import sessions
from services.router.models import AUDIT
from shared import audit
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1/people/{person_id}/sign-in-links", tags=["roster"],
                   responses=ERRORS)


class SignInLink(BaseModel):
    url: str = Field(description="Opens the console signed in as the person; works once")
    expires_at: datetime


@routes.post("", status_code=status.HTTP_201_CREATED, response_model=SignInLink,
             summary="A one-time console sign-in link for a person (shown once)")
async def issue_sign_in_link(person_id: Annotated[str, Path(max_length=36)],
                             runtime: RuntimeDep, context: ContextDep,
                             _: AdminDep) -> SignInLink:
    now = context.clock.now()
    async with runtime.db.transaction() as session:
        person = await roster_repository.find_sdr(session, person_id)
        if person is None or not person["active"]:
            raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
        secret = await sessions.issue_sign_in_link(session, person_id, now)
        await audit.record(session, AUDIT, at=now, action="sign_in_link.issued",
                           subject=f"person:{person_id}", after={"expires_at": now.isoformat()})
    return SignInLink(url=f"{context.public_base_url}/console/sign-in/{secret}",
                      expires_at=now + sessions.LINK_LIFETIME)
