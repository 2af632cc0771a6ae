"""Bearer tokens: who may call a service's routes, checked the same way by every service.

Each service has admin tokens (`LEADRELAY_ADMIN_TOKEN`, comma-separated: during a rotation the
old and the new one both work until the old one is removed). A missing or unknown token is a
`401` with `WWW-Authenticate: Bearer`; a known token that may not use the route is a `403`;
both are RFC 9457 problems. Tokens are compared in constant time, against every accepted token.

The guard that admits a request names its caller for the audit log (`current_caller`):
`admin:<fingerprint>` (the first 12 hex digits of the token's SHA-256, so a log tells which
admin token was used during a rotation, and nothing of the token) or `person:<id>`.

A route's guard is a FastAPI dependency marked with the role it demands (`guard_role`);
`document_bearer_auth` reads those marks to write the OpenAPI security requirements, so the
document says which routes need which token, and a route without a guard is visibly public.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from shared.problems import PROBLEM_MEDIA_TYPE, PROBLEM_SCHEMA, ProblemError

SECURITY_SCHEME = "bearerAuth"
ADMIN_ROLE = "admin"
ROLE_ATTRIBUTE = "__leadrelay_auth_role__"
AUTH_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one this service does not know"},
    403: {"description": "The token may not use this route"},
}
F = TypeVar("F", bound=Callable[..., Any])
_caller: ContextVar[str] = ContextVar("leadrelay_caller", default="unknown")


def current_caller() -> str:
    """Who the guard of the request being served admitted (`unknown` outside a request)."""
    return _caller.get()


def admit(caller: str) -> None:
    """Name the caller of the request being served; call it from an async guard (a sync one
    runs in a thread, in a copy of the request's context)."""
    _caller.set(caller)


def admin_caller(token: str) -> str:
    return "admin:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def parse_tokens(value: str) -> tuple[str, ...]:
    """The tokens of a comma-separated setting, blanks dropped."""
    return tuple(token.strip() for token in value.split(",") if token.strip())


def token_matches(given: str, accepted: Iterable[str]) -> bool:
    """True when `given` is one of `accepted`; every accepted token is compared, in constant
    time, so the answer's timing tells nothing of which one matched or how much of it."""
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given.encode(), token.encode())
    return matched


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def unauthorized(detail: str = "Send `Authorization: Bearer <token>`.") -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "Forbidden", detail)


def admin_tokens(request: Request) -> tuple[str, ...]:
    """The admin tokens `service_app` put on the app's state (none: no admin route answers)."""
    tokens: tuple[str, ...] = getattr(request.app.state, "admin_tokens", ())
    return tokens


def is_admin(request: Request) -> bool:
    token = bearer_token(request)
    return token is not None and token_matches(token, admin_tokens(request))


def guard_role(role: str) -> Callable[[F], F]:
    """Mark a dependency as a guard demanding `role` (`admin`, or any other name a service
    gives its callers); the OpenAPI document lists the role on every route that uses it."""

    def mark(guard: F) -> F:
        setattr(guard, ROLE_ATTRIBUTE, role)
        return guard

    return mark


@guard_role(ADMIN_ROLE)
async def require_admin(request: Request) -> None:
    """The admin token, or `401`. Async and of the request alone: no thread hop per request."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized("This route needs the admin bearer token.")
    if not token_matches(token, admin_tokens(request)):
        raise unauthorized("The bearer token is not valid.")
    admit(admin_caller(token))


def route_roles(dependant: Dependant) -> set[str]:
    """The roles the guards anywhere in a route's dependency tree demand."""
    roles: set[str] = set()
    role = getattr(dependant.call, ROLE_ATTRIBUTE, None)
    if role is not None:
        roles.add(role)
    for sub in dependant.dependencies:
        roles |= route_roles(sub)
    return roles


def document_bearer_auth(app: FastAPI) -> None:
    """Add the bearer scheme to the app's OpenAPI document and, on each guarded route, its
    security requirement (the role names it demands, OpenAPI 3.1) and its `401`/`403`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http", "scheme": "bearer",
            "description": "The admin token (`LEADRELAY_ADMIN_TOKEN`), or a caller's own token "
                           "where a route says so",
        }
        problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        components.setdefault("schemas", {}).setdefault("Problem", PROBLEM_SCHEMA)
        # Route contexts: routes as included (FastAPI 0.16x), with their routers' dependencies.
        for route in iter_route_contexts(app.routes):
            dependant = getattr(route, "dependant", None)
            if dependant is None or not route.include_in_schema:
                continue
            roles = route_roles(dependant)
            if not roles:
                continue
            path = document["paths"].get(route.path_format, {})
            for method in route.methods or ():
                operation = path.get(method.lower())
                if operation is None:
                    continue
                operation["security"] = [{SECURITY_SCHEME: sorted(roles - {"any"})}]
                responses = operation.setdefault("responses", {})
                for status, response in AUTH_PROBLEMS.items():
                    responses.setdefault(str(status), {**response, "content": problem})
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
