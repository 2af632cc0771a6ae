"""ingest's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings

INGEST_PORT = 8701


class IngestSettings(ServiceSettings):
    service_name: ClassVar[str] = "ingest"

    port: int = Field(default=INGEST_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
