"""The source registry API: `GET/PUT/DELETE /v1/sources/{key}`. Secrets are never returned
(`secret_count` says how many there are, `crm_token_set` whether a HubSpot source has its
token) and are stored encrypted. A CRM URL that the outbound guard refuses is a `422`.

Every change is in the audit log (`GET /v1/audit`), secrets redacted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel

from services.ingest import repository
from services.ingest.api.dependencies import ADMIN_PROBLEMS, AdminDep, ContextDep
from services.ingest.api.route import IngestRoute
from services.ingest.models import AUDIT
from services.ingest.sources import Source, SourceConfig, SourceKey
from shared import audit
from shared.app import RuntimeDep
from shared.outbound import DestinationPolicy, RefusedDestinationError
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["sources"],
                   dependencies=[AdminDep], responses=ADMIN_PROBLEMS, route_class=IngestRoute)


class SourceView(BaseModel):
    key: str
    kind: str
    managed_by: str
    secret_count: int
    field_mapping: dict[str, str]
    defaults: dict[str, Any]
    allowed_origins: list[str]
    thank_you_url: str | None
    crm_token_set: bool = False
    crm_base_url: str | None = None

    @classmethod
    def of(cls, source: Source) -> SourceView:
        return cls(
            key=source.key, kind=source.kind, managed_by=source.managed_by,
            secret_count=len(source.secrets), field_mapping=source.field_mapping,
            defaults=source.tag_defaults(), allowed_origins=source.allowed_origins,
            thank_you_url=str(source.thank_you_url) if source.thank_you_url else None,
            crm_token_set=bool(source.crm_token),
            crm_base_url=str(source.crm_base_url) if source.crm_base_url else None,
        )


@routes.get("/sources", response_model=list[SourceView], summary="List the sources")
async def list_sources(runtime: RuntimeDep, context: ContextDep) -> list[SourceView]:
    async with runtime.db.reading() as session:
        return [SourceView.of(source) for source in await context.sources.all(session)]


@routes.get("/sources/{key}", response_model=SourceView, summary="Read a source",
            responses={404: {"description": "No such source"}})
async def read_source(
    key: Annotated[SourceKey, Path()], runtime: RuntimeDep, context: ContextDep
) -> SourceView:
    async with runtime.db.reading() as session:
        source = await context.sources.find(session, key)
    if source is None:
        raise ProblemError(404, "Source not found", f"No source has the key {key!r}.")
    return SourceView.of(source)


@routes.put("/sources/{key}", response_model=SourceView, summary="Create or replace a source",
            responses={201: {"description": "Created", "model": SourceView},
                       409: {"description": "The key is managed by the sources file"}})
async def save_source(
    key: Annotated[SourceKey, Path()], config: SourceConfig, runtime: RuntimeDep,
    context: ContextDep, response: Response,
) -> SourceView:
    _not_from_file(context, key)
    await _check_crm_url(context, config)
    document = config.model_dump(mode="json")
    async with runtime.db.transaction() as session:
        before = await repository.find_source(session, key)
        created = await repository.save_source(
            session, key, config.kind, context.sources.stored_config(config), context.clock.now()
        )
        await audit.record(session, AUDIT, at=context.clock.now(), action="source.saved",
                           subject=f"source:{key}",
                           before=None if before is None else dict(before["config"]),
                           after=document)
    response.status_code = 201 if created else 200
    return SourceView.of(Source.model_validate({**config.model_dump(), "key": key}))


@routes.delete("/sources/{key}", status_code=204, summary="Delete a source",
               responses={404: {"description": "No such source"},
                          409: {"description": "The key is managed by the sources file"}})
async def delete_source(
    key: Annotated[SourceKey, Path()], runtime: RuntimeDep, context: ContextDep
) -> Response:
    _not_from_file(context, key)
    async with runtime.db.transaction() as session:
        before = await repository.find_source(session, key)
        deleted = await repository.delete_source(session, key)
        if before is not None:
            await audit.record(session, AUDIT, at=context.clock.now(), action="source.deleted",
                               subject=f"source:{key}", before=dict(before["config"]))
    if not deleted:
        raise ProblemError(404, "Source not found", f"No source has the key {key!r}.")
    return Response(status_code=204)


def _not_from_file(context: ContextDep, key: str) -> None:
    if key in context.sources.file_sources:
        raise ProblemError(
            409, "Source managed by file",
            f"The source {key!r} is declared in the sources file; change it there.",
            slug="source-managed-by-file",
        )


async def _check_crm_url(context: ContextDep, config: SourceConfig) -> None:
    """422 when the CRM URL may not be called (`shared.outbound`); it is checked again on
    every call."""
    if config.crm_base_url is None:
        return
    policy = DestinationPolicy(context.settings.allowed_webhook_urls)
    try:
        await policy.check_registration(str(config.crm_base_url))
    except RefusedDestinationError as refused:
        raise ProblemError(422, "CRM URL refused", f"crm_base_url: {refused}",
                           slug="crm-url-refused", field="crm_base_url") from None
