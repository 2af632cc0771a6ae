"""The source registry: who may send leads, how they prove it, and how their fields map.

A source is declared in the YAML file named by `LEADRELAY_SOURCES_FILE` (read once at start,
an invalid file stops the process) or through the API (`PUT /v1/sources/{key}`, stored in
`ingest_source`). A key declared in the file is managed by the file: the API cannot change it.

```yaml
sources:
  - key: website-contact        # used in /v1/forms/{key} or /v1/webhooks/{key}
    kind: form                  # form, hubspot, typeform, webflow, zapier, standard_webhooks, api
    secrets: []                 # several at once during a rotation
    field_mapping: {"Your email": email}
    defaults: {channel: website, campaign: spring-launch}
    allowed_origins: ["https://www.example.com"]
    thank_you_url: https://www.example.com/thanks
  - key: hubspot
    kind: hubspot
    secrets: [app-client-secret]  # checks X-HubSpot-Signature-v3
    crm_token: pat-na1-...        # fetches the contacts of thin events (private app token)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.schemas import LeadSubmission
from shared.db import Database
from shared.encryption import SecretBox

SourceKind = Literal["form", "hubspot", "typeform", "webflow", "zapier", "standard_webhooks", "api"]
WEBHOOK_KINDS = frozenset({"hubspot", "typeform", "webflow", "zapier", "standard_webhooks"})
CANONICAL_FIELDS = frozenset(LeadSubmission.model_fields) | frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "referrer",
     "landing_page", "consent_email", "consent_phone", "legal_basis", "external_id"}
)
SourceKey = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]


class SourceDefaults(BaseModel):
    """Tags added to every lead of the source when the submission does not carry them."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(default=None, max_length=200)
    campaign: str | None = Field(default=None, max_length=200)
    source: str | None = Field(default=None, max_length=100)


class SourceConfig(BaseModel):
    """A source as the API accepts it (`PUT /v1/sources/{key}`)."""

    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    secrets: list[Annotated[str, Field(min_length=8, max_length=500)]] = Field(
        default_factory=list, max_length=5,
        description="Active secrets (signing keys or bearer tokens); several during a rotation",
    )
    field_mapping: dict[Annotated[str, Field(max_length=200)], str] = Field(
        default_factory=dict, description="Sender's field name -> canonical field name"
    )
    defaults: SourceDefaults = Field(default_factory=SourceDefaults)
    allowed_origins: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list)
    thank_you_url: HttpUrl | None = None
    honeypot_field: str | None = Field(default="website_url", max_length=100)
    signing_url: HttpUrl | None = Field(
        default=None, description="HubSpot: the public URL HubSpot calls, if a proxy rewrites it"
    )
    crm_token: str | None = Field(
        default=None, min_length=8, max_length=500,
        description="HubSpot: a private app's access token (scope `crm.objects.contacts.read`); "
        "with it, thin webhook events (`contact.creation`, `contact.propertyChange`) fetch the "
        "contact from the CRM and become leads. Stored encrypted, never returned",
    )
    crm_base_url: HttpUrl | None = Field(
        default=None, description="HubSpot: the CRM API's base URL; unset: "
        "`LEADRELAY_HUBSPOT_API_URL` (https://api.hubapi.com)",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        unknown = sorted(set(self.field_mapping.values()) - CANONICAL_FIELDS)
        if unknown:
            raise ValueError(f"field_mapping targets unknown fields: {', '.join(unknown)}")
        if self.kind in WEBHOOK_KINDS and not self.secrets:
            raise ValueError(f"a {self.kind} source needs at least one secret")
        if self.kind != "hubspot" and (self.crm_token or self.crm_base_url):
            raise ValueError("crm_token and crm_base_url are for hubspot sources only")
        return self

    def tag_defaults(self) -> dict[str, Any]:
        return self.defaults.model_dump(exclude_none=True)


class Source(SourceConfig):
    key: SourceKey
    managed_by: Literal["file", "api"] = "api"


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(default_factory=list)


class SourcesFileError(ValueError):
    """The sources file cannot be read or is invalid; the message names the problem."""


def load_sources_file(path: Path | None) -> dict[str, Source]:
    """The sources declared in `path`, by key (none when `path` is None)."""
    if path is None:
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        declared = SourcesFile.model_validate(document).sources
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise SourcesFileError(f"sources file {path}: {error}") from error
    keys = [source.key for source in declared]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise SourcesFileError(f"sources file {path}: duplicate keys {', '.join(duplicates)}")
    return {source.key: source.model_copy(update={"managed_by": "file"}) for source in declared}


class SourceRegistry:
    """Finds a source by key: the file's sources first, then those registered through the API.

    A stored source's secrets are encrypted (`shared.encryption`): `stored_config` is what the
    table holds, and reading a row decrypts them."""

    def __init__(self, file_sources: Mapping[str, Source], secrets: SecretBox) -> None:
        self.file_sources = dict(file_sources)
        self.secrets = secrets

    def stored_config(self, config: SourceConfig) -> dict[str, Any]:
        """`config` as `ingest_source.config` stores it: its secrets encrypted."""
        document = config.model_dump(mode="json")
        document["secrets"] = [self.secrets.encrypt(secret) for secret in config.secrets]
        if config.crm_token:
            document["crm_token"] = self.secrets.encrypt(config.crm_token)
        return document

    def source_from_row(self, row: RowMapping) -> Source:
        config = dict(row["config"])
        config["secrets"] = [self.secrets.decrypt(value) for value in config.get("secrets", [])]
        if config.get("crm_token"):
            config["crm_token"] = self.secrets.decrypt(config["crm_token"])
        return Source.model_validate({**config, "key": row["key"], "managed_by": "api"})

    async def find(self, session: AsyncSession, key: str) -> Source | None:
        if key in self.file_sources:
            return self.file_sources[key]
        row = await repository.find_source(session, key)
        return None if row is None else self.source_from_row(row)

    async def all(self, session: AsyncSession) -> list[Source]:
        stored = [self.source_from_row(row) for row in await repository.list_sources(session)]
        listed = {**{source.key: source for source in stored}, **self.file_sources}
        return [listed[key] for key in sorted(listed)]


async def reencrypt_sources(db: Database, secrets: SecretBox) -> int:
    """Encrypt the secrets of every stored source again with the newest key (after a key was
    put in front of `LEADRELAY_ENCRYPTION_KEYS`); returns the sources changed."""
    changed = 0
    async with db.transaction() as session:
        for row in await repository.list_sources(session):
            config = dict(row["config"])
            if config.get("secrets") or config.get("crm_token"):
                config["secrets"] = [secrets.reencrypt(value)
                                     for value in config.get("secrets", [])]
                if config.get("crm_token"):
                    config["crm_token"] = secrets.reencrypt(config["crm_token"])
                await repository.save_source(session, row["key"], row["kind"], config,
                                             row["updated_at"])
                changed += 1
    return changed
