"""The rules studio (`/console/rules`, the admin only): edit the rule set as YAML or JSON,
see the validation errors inline, replay the draft over the last days' leads against the
rules in force (`POST /v1/rules/replay`'s computation), then publish it as the next version;
and replay a draft scoring model through the scorer's `POST /v1/scoring-model/replay`, then
publish it through its `PUT /v1/scoring-model`.

Nothing is stored until Publish; the draft travels in the form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from services.router import replay_api, roster
from services.router.access import Principal
from services.router.console import scorer_api
from services.router.console.pages import context_of, page, refused, signed_in, to
from services.router.console.sessions import Viewer
from services.router.rules import RuleSet
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/console", include_in_schema=False)
Draft = Annotated[str, Form(max_length=200_000)]
Csrf = Annotated[str, Form(max_length=100)]
Days = Annotated[int, Form(ge=1, le=90)]


def parsed(draft: str) -> tuple[RuleSet | None, list[str]]:
    """The draft as a rule set, or the errors that keep it from being one (in words, each
    with where it is)."""
    try:
        document = yaml.safe_load(draft) if draft.strip() else {}
    except yaml.YAMLError as error:
        return None, [f"Not valid YAML or JSON: {error}"]
    try:
        return RuleSet.model_validate(document), []
    except ValidationError as error:
        return None, [f"{'.'.join(str(part) for part in problem['loc']) or 'rule set'}: "
                      f"{problem['msg']}" for problem in error.errors()]


async def current_draft(request: Request, runtime: RuntimeDep) -> tuple[str, str]:
    """(version, the rules in force as YAML)."""
    async with runtime.db.reading() as session:
        version, rule_set, _ = await roster.current_rules(session, context_of(request).rule_cache)
    document = rule_set.model_dump(mode="json", exclude_defaults=True)
    return version, yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _admin_only(request: Request, viewer: Viewer | None) -> Response | None:
    if viewer is None:
        return to("/console/sign-in")
    if not viewer.is_admin:
        return page(request, "message.html", {
            "viewer": viewer, "title": "The admin only",
            "text": "The rules studio is for the admin (sign in with the admin token)."}, 403)
    return None


@routes.get("/rules", response_class=HTMLResponse)
async def studio(request: Request, runtime: RuntimeDep, done: str = "",
                 model_done: str = "") -> Response:
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer)) is not None:
        return stop
    version, draft = await current_draft(request, runtime)
    model, model_error = await current_model(request)
    notice = (f"Published: version {done} is in force." if done else
              f"Published: scoring model {model_done} is in force; the scorer rescores every "
              "lead against it." if model_done else "")
    return page(request, "rules.html", {
        "viewer": viewer, "title": "Rules studio", "version": version, "draft": draft,
        "days": 30, "model": model, "model_problems": [model_error] if model_error else [],
        "notice": notice})


@routes.get("/rules/reference", response_class=HTMLResponse)
async def reference(request: Request, runtime: RuntimeDep) -> Response:
    """The README's "Routing rules" section: the syntax, an example, every condition."""
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer)) is not None:
        return stop
    return page(request, "rules_reference.html", {"viewer": viewer,
                                                  "title": "Rules reference"})


async def _studio_values(request: Request, runtime: RuntimeDep, viewer: Viewer | None,
                         draft: str, model: str, days: int) -> dict[str, Any]:
    """What every studio page shows: the version in force and both drafts as sent (the one
    form holds them, so no action loses the other draft)."""
    version, _ = await current_draft(request, runtime)
    return {"viewer": viewer, "title": "Rules studio", "version": version, "draft": draft,
            "model": model, "days": days, "problems": [], "model_problems": []}


@routes.post("/rules/replay", response_class=HTMLResponse)
async def replay_draft(request: Request, runtime: RuntimeDep, draft: Draft = "",
                       model: Draft = "", csrf: Csrf = "", days: Days = 30) -> Response:
    """The draft rule set replayed over the last days' first offers, against the rules in
    force."""
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer) or refused(request, viewer, csrf)) is not None:
        return stop
    values = await _studio_values(request, runtime, viewer, draft, model, days)
    rule_set, values["problems"] = parsed(draft)
    if rule_set is not None:
        try:
            values["replay"] = await replay_api.replay_rules(
                replay_api.ReplayRequest(rules=rule_set, days=days), runtime,
                context_of(request), Principal(kind="admin"))
        except ProblemError as problem:
            values["problems"] = [problem.detail or problem.title]
    return page(request, "rules.html", values, 422 if values["problems"] else 200)


async def current_model(request: Request) -> tuple[str, str | None]:
    """(the scoring model in force as YAML, or "" and why it could not be read)."""
    try:
        model = await scorer_api.scoring_model(context_of(request).settings)
    except scorer_api.ScorerUnavailableError as error:
        return "", f"The scoring model could not be read: {error}"
    return yaml.safe_dump(model["document"], sort_keys=False, allow_unicode=True), None


@routes.post("/rules/model-replay", response_class=HTMLResponse)
async def replay_model(request: Request, runtime: RuntimeDep, draft: Draft = "",
                       model: Draft = "", csrf: Csrf = "", days: Days = 30) -> Response:
    """The draft scoring model replayed by the scorer over the last days' leads: MQL and hot
    counts under the model in force and under the draft."""
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer) or refused(request, viewer, csrf)) is not None:
        return stop
    values = await _studio_values(request, runtime, viewer, draft, model, days)
    status, body = await _with_model(
        model, lambda document: scorer_api.replay_model(context_of(request).settings,
                                                        document, days))
    if status == 200:
        values["model_replay"] = body
    else:
        values["model_problems"] = body
    return page(request, "rules.html", values, 422 if values["model_problems"] else 200)


@routes.post("/rules/model-publish")
async def publish_model(request: Request, runtime: RuntimeDep, draft: Draft = "",
                        model: Draft = "", csrf: Csrf = "", days: Days = 30) -> Response:
    """The draft scoring model becomes the one in force (the scorer's `PUT /v1/scoring-model`),
    when the scorer finds it valid and its version new."""
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer) or refused(request, viewer, csrf)) is not None:
        return stop
    status, body = await _with_model(
        model, lambda document: scorer_api.publish_model(context_of(request).settings,
                                                         document))
    if status == 200:
        return to(f"/console/rules?model_done={quote(str(body.get('version', '')))}")
    values = await _studio_values(request, runtime, viewer, draft, model, days)
    return page(request, "rules.html", {**values, "model_problems": body}, 422)


async def _with_model(
    model: str, call: Callable[[Any], Awaitable[tuple[int, Any]]]
) -> tuple[int, Any]:
    """(200, the scorer's answer) of `call` with the draft model's document, or (422, the
    problems to show: unreadable YAML, an unreachable scorer, what the scorer refused)."""
    try:
        document = yaml.safe_load(model) if model.strip() else {}
        status, body = await call(document)
    except yaml.YAMLError as error:
        return 422, [f"Not valid YAML or JSON: {error}"]
    except scorer_api.ScorerUnavailableError as error:
        return 422, [str(error)]
    if status == 200:
        return status, body
    return status, [str(body.get("detail") or body.get("title"))] + [
        f"{error.get('field')}: {error.get('message')}"
        for error in body.get("errors") or [] if isinstance(error, dict)]


@routes.post("/rules/publish")
async def publish(request: Request, runtime: RuntimeDep, draft: Draft = "",
                  model: Draft = "", csrf: Csrf = "", days: Days = 30) -> Response:
    """The draft rule set becomes the next version (as `PUT /v1/rules`), when it is valid."""
    viewer = await signed_in(request, runtime)
    if (stop := _admin_only(request, viewer) or refused(request, viewer, csrf)) is not None:
        return stop
    rule_set, problems = parsed(draft)
    if rule_set is not None:
        context = context_of(request)
        try:
            async with runtime.db.transaction() as session:
                row = await roster.store_rules(session, context.clock, rule_set)
        except ProblemError as problem:
            if problem.status >= 500:
                raise
            problems = [problem.detail or problem.title]
        else:
            return to(f"/console/rules?done={row['version']}")
    values = await _studio_values(request, runtime, viewer, draft, model, days)
    return page(request, "rules.html", {**values, "problems": problems}, 422)

