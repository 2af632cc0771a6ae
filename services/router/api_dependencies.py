"""What router's endpoints share: the context (`ContextDep`), who is calling (`PrincipalDep`,
`AdminDep`) and what they may see (`may_see`), the error responses every route documents, and
request bodies in JSON or YAML (`parse_document`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import yaml
from fastapi import Depends, Header, Query, Request
from pydantic import BaseModel, ValidationError

from services.router import (
    roster_repository,
)
from services.router.access import Principal, token_hash
from services.router.action_links import LinkCheck, check_link
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.auth import (
    ADMIN_ROLE,
    admin_caller,
    admit,
    bearer_token,
    forbidden,
    guard_role,
    is_admin,
    unauthorized,
)
from shared.problems import ProblemError

M = TypeVar("M", bound=BaseModel)

PROBLEM = {"description": "Problem details"}
ERRORS: dict[int | str, dict[str, Any]] = {401: PROBLEM, 403: PROBLEM, 404: PROBLEM}


def get_context(request: Request) -> RouterContext:
    context: RouterContext = request.app.state.router_context
    return context


ContextDep = Annotated[RouterContext, Depends(get_context)]


@guard_role("any")
async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=200, description="Signed action link")] = None,
) -> Principal:
    if authorization:
        value = bearer_token(request)
        if value is not None:
            if is_admin(request):
                admit(admin_caller(value))
                return Principal(kind="admin")
            async with runtime.db.reading() as session:
                person = await roster_repository.find_person_by_token(session, token_hash(value))
                if person is not None and person["active"]:
                    teams = (
                        await roster_repository.teams_managed_by(session, person["id"])
                        if person["role"] == "manager"
                        else await roster_repository.teams_of(session, person["id"])
                    )
                    admit(f"person:{person['id']}")
                    return Principal(kind="person", person_id=person["id"], role=person["role"],
                                     team_ids=frozenset(teams))
        raise unauthorized("The bearer token is not valid.")
    if token and "assignment_id" in request.path_params:
        # Checked here, before the body's fields are: a link that opens nothing is a 401, not
        # a 422. The action is the route's last segment (`.../{assignment_id}/accept`).
        context = get_context(request)
        route = request.scope.get("route")
        action = getattr(route, "path_format", "").rsplit("/", 1)[-1]
        if check_link(context.action_keys, request.path_params["assignment_id"], action, token,
                      context.clock.now()) is not LinkCheck.VALID:
            raise unauthorized("The link is not valid for this assignment and action.")
        return Principal(kind="link", action=token)
    raise unauthorized()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@guard_role(ADMIN_ROLE)
def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise forbidden("This route needs the admin token.")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def own_person_id(principal: Principal) -> str:
    if principal.person_id is None:
        raise forbidden("This route needs a person's own token.")
    return principal.person_id


def may_see(principal: Principal, row: Mapping[Any, Any], context: RouterContext,
            action: str | None = None) -> bool:
    if principal.is_admin:
        return True
    if principal.kind == "link":
        return action is not None and principal.action is not None and check_link(
            context.action_keys, row["id"], action, principal.action, context.clock.now()
        ) is LinkCheck.VALID
    if row["sdr_id"] == principal.person_id:
        return True
    return principal.role == "manager" and row["team_id"] in principal.team_ids


async def parse_document(request: Request, model: type[M]) -> M:
    """A JSON or YAML (`Content-Type: application/yaml`) request body as `model`."""
    raw = await request.body()
    try:
        if "yaml" in request.headers.get("content-type", ""):
            data = yaml.safe_load(raw)
            return model.model_validate(data)
        return model.model_validate_json(raw)
    except yaml.YAMLError as error:
        raise ProblemError(422, "Invalid request", f"The YAML does not parse: {error}",
                           slug="invalid-request") from None
    except ValidationError as error:
        raise ProblemError(
            422, "Invalid request", "The document has invalid or missing fields.",
            slug="invalid-request",
            errors=[{"field": ".".join(str(part) for part in item["loc"]), "in": "body",
                     "message": item["msg"]} for item in error.errors()],
        ) from None
