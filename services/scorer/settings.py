"""scorer's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings

SCORER_PORT = 8702


class ScorerSettings(ServiceSettings):
    service_name: ClassVar[str] = "scorer"

    port: int = Field(default=SCORER_PORT, ge=0, le=65535)
    scoring_model_path: Path | None = Field(
        default=None,
        description="YAML scoring model to use instead of the one shipped with the scorer",
    )
