"""The scorer's public HTTP API as the console uses it: the funnel report, and the replay and
publication of a draft scoring model. Over HTTP with the router's first admin token (services
never import each other); a scorer that does not answer is a `ScorerUnavailableError` the page
words."""

from __future__ import annotations

from typing import Any

import httpx

from services.router.settings import RouterSettings

TIMEOUT_SECONDS = 10.0


class ScorerUnavailableError(Exception):
    """The scorer did not answer, or answered with an error; the message says which."""


async def call(settings: RouterSettings, method: str, path: str, *,
               params: dict[str, str] | None = None,
               json: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of one call; 4xx answers are returned, for their problem details."""
    token = next(iter(settings.admin_tokens), "")
    try:
        async with httpx.AsyncClient(base_url=settings.scorer_url.rstrip("/"),
                                     timeout=TIMEOUT_SECONDS) as client:
            answer = await client.request(method, path, params=params, json=json,
                                          headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        raise ScorerUnavailableError(f"The scorer at {settings.scorer_url} did not answer "
                                f"({type(error).__name__}).") from error
    if answer.status_code >= 500 or answer.status_code in (401, 403):
        raise ScorerUnavailableError(f"The scorer answered {answer.status_code}.")
    try:
        return answer.status_code, answer.json()
    except ValueError as error:
        raise ScorerUnavailableError("The scorer's answer was not JSON.") from error


async def funnel(settings: RouterSettings, since: str, until: str) -> dict[str, Any]:
    status, body = await call(settings, "GET", "/v1/reports/funnel",
                              params={"since": since, "until": until})
    if status != 200:
        raise ScorerUnavailableError(str(body.get("detail") or body) if isinstance(body, dict)
                                else f"The scorer answered {status}.")
    found: dict[str, Any] = body
    return found


async def scoring_model(settings: RouterSettings) -> dict[str, Any]:
    """The scoring model in force (`version`, `document`)."""
    status, body = await call(settings, "GET", "/v1/scoring-model")
    if status != 200:
        raise ScorerUnavailableError(f"The scorer answered {status}.")
    found: dict[str, Any] = body
    return found


async def replay_model(settings: RouterSettings, model: Any, days: int) -> tuple[int, Any]:
    """(status, body) of the scorer's replay of a draft model: 200 with the counts under each
    model, or 422 with the problem details saying what is wrong with the draft."""
    return await call(settings, "POST", "/v1/scoring-model/replay",
                      json={"model": model, "days": days})


async def publish_model(settings: RouterSettings, model: Any) -> tuple[int, Any]:
    """(status, body) of publishing a draft model (`PUT /v1/scoring-model`): 200 with the
    version now in force, 409 when that version was published before, 422 with the problems
    of an invalid document."""
    return await call(settings, "PUT", "/v1/scoring-model", json=model)
