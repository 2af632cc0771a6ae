"""JSON endpoints called straight, without FastAPI's per-request dependency solving.

FastAPI's request handler spends more on each lead than validating the lead itself: it reads
the body again, extracts endpoint context, walks the dependency tree and validates every header
parameter, present or not. For an endpoint whose parameters are all of the simple kinds below,
`lean_handler` builds a handler that does only what the parameters need:

- the body: one pydantic model, validated from the JSON `IngestRoute` already parsed;
- `Request`;
- optional header parameters (`None` when not sent), validated only when sent;
- dependencies that are coroutine functions of the request alone (`ContextDep`, and the
  guards of `shared.auth`, which raise to refuse the request).

It answers only requests that validate: anything invalid goes to FastAPI's own handler, so
error answers stay exactly FastAPI's, and so does the OpenAPI document, which still comes from
the endpoint's signature. An endpoint with any other kind of parameter keeps FastAPI's handler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.params import Header
from fastapi.routing import APIRoute
from pydantic import BaseModel

LeanHandler = Callable[[Request, Any], Coroutine[Any, Any, Response | None]]
"""Answers a request given its parsed JSON body, or None when FastAPI's handler must answer."""


@dataclass(frozen=True)
class _HeaderParameter:
    name: str
    key: str
    """The header's name in the request: FastAPI's alias (`x_source_key` is `x-source-key`)."""
    validate: Callable[..., tuple[Any, list[Any]]]


def lean_handler(route: APIRoute) -> LeanHandler | None:
    """A handler for `route` that skips FastAPI's dependency solving; None when the endpoint
    takes a parameter of a kind this does not know."""
    dependant, body = route.dependant, route.body_field
    if (
        body is None or len(dependant.body_params) != 1
        or getattr(dependant.body_params[0].field_info, "embed", True)
        or not _is_model(body.field_info.annotation)
        or dependant.path_params or dependant.query_params or dependant.cookie_params
        or _has_special_parameters(dependant) or not _returns_response(dependant.call)
        or not inspect.iscoroutinefunction(dependant.call)
    ):
        return None
    headers = [_header_parameter(field) for field in dependant.header_params]
    if None in headers or not all(_is_request_dependency(sub) for sub in dependant.dependencies):
        return None
    endpoint: Callable[..., Coroutine[Any, Any, Response]] = dependant.call
    header_parameters: list[_HeaderParameter] = headers  # type: ignore[assignment]
    body_name, validate_body = body.name, body.validate
    request_name = dependant.request_param_name
    dependencies: list[tuple[str | None, Callable[..., Any], str]] = [
        (sub.name, sub.call, sub.request_param_name) for sub in dependant.dependencies  # type: ignore[misc]
    ]

    async def handle(request: Request, document: Any) -> Response | None:
        if request.app.dependency_overrides:
            return None
        arguments: dict[str, Any] = {}
        for name, call, takes_request in dependencies:  # first: a guard refuses before any work
            solved = await call(**{takes_request: request})
            if name is not None:
                arguments[name] = solved
        value, errors = validate_body(document)
        if errors:
            return None
        arguments[body_name] = value
        sent = request.headers
        for header in header_parameters:
            raw = sent.get(header.key)
            if raw is None:
                arguments[header.name] = None
                continue
            arguments[header.name], errors = header.validate(raw)
            if errors:
                return None
        if request_name is not None:
            arguments[request_name] = request
        return await endpoint(**arguments)

    return handle


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _has_special_parameters(dependant: Dependant) -> bool:
    return any((
        dependant.websocket_param_name, dependant.http_connection_param_name,
        dependant.response_param_name, dependant.background_tasks_param_name,
        dependant.security_scopes_param_name, dependant.own_oauth_scopes,
    ))


def _returns_response(call: Callable[..., Any] | None) -> bool:
    if call is None:
        return False
    returned = inspect.signature(call, eval_str=True).return_annotation
    return inspect.isclass(returned) and issubclass(returned, Response)


def _header_parameter(field: Any) -> _HeaderParameter | None:
    info = field.field_info
    if (
        not isinstance(info, Header) or info.is_required() or info.default is not None
        or info.validation_alias is not None or field.config
    ):
        return None
    return _HeaderParameter(field.name, field.alias, field.validate)


def _is_request_dependency(sub: Dependant) -> bool:
    return (
        sub.request_param_name is not None
        and inspect.iscoroutinefunction(sub.call) and not sub.dependencies
        and not (sub.path_params or sub.query_params or sub.header_params
                 or sub.cookie_params or sub.body_params)
        and not _has_special_parameters(sub)
    )
