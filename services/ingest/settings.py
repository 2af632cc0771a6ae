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
