"""ingest's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings

INGEST_PORT = 8701


class IngestSettings(ServiceSettings):
    service_name: ClassVar[str] = "ingest"

    port: int = Field(default=INGEST_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest JSON body of a single-item route"
    )
    batch_max_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest JSON body of a `.../batch` route"
    )
    form_max_bytes: int = Field(default=16 * 1024, ge=1024, description="Largest form post")
    webhook_max_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest webhook")
    form_posts_per_ip_per_minute: float = Field(default=10.0, gt=0)
    form_posts_per_form_per_minute: float = Field(default=600.0, gt=0)
    sources_file: Path | None = Field(
        default=None, description="YAML file of sources, read once at start"
    )
    submission_retention_days: float = Field(
        default=90.0, gt=0, description="Raw submissions older than this are purged"
    )
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    hubspot_api_url: str = Field(
        default="https://api.hubapi.com",
        description="HubSpot's API base URL, where thin webhook events' contacts are fetched "
                    "(`GET /crm/v3/objects/contacts/{id}`); a source's `crm_base_url` overrides it",
    )
    webhook_allowed_urls: str = Field(
        default="",
        description="Comma-separated URLs or origins the CRM fetch may call although they are "
                    "not public internet addresses (a local test server only)",
    )
    crm_fetch_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time limit of one CRM call (connect, write, read)"
    )
    crm_fetch_max_attempts: int = Field(
        default=10, ge=1, description="Tries of one contact fetch before it is marked failed"
    )
    crm_fetch_backoff_seconds: float = Field(
        default=2.0, gt=0,
        description="Delay before the first retry of a fetch that failed (5xx, network); "
                    "doubles on each retry. A `429` waits its `Retry-After` instead",
    )
    crm_fetch_max_backoff_seconds: float = Field(default=600.0, gt=0)
    crm_fetch_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest sleep of the fetch loop when nothing wakes it"
    )
    crm_fetch_batch_size: int = Field(
        default=5, ge=1, le=100,
        description="Fetches claimed and run at once (HubSpot allows a private app 100 to 190 "
                    "calls per 10 seconds, by the account's plan)",
    )

    @property
    def allowed_webhook_urls(self) -> list[str]:
        return [url.strip() for url in self.webhook_allowed_urls.split(",") if url.strip()]
