"""router's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from shared.settings import ServiceSettings

ROUTER_PORT = 8703


class RouterSettings(ServiceSettings):
    service_name: ClassVar[str] = "router"

    port: int = Field(default=ROUTER_PORT, ge=0, le=65535)
    public_base_url: str = Field(
        default=f"http://127.0.0.1:{ROUTER_PORT}",
        description="Where SDRs reach this service; accept links in notifications start with it",
    )
    sla_accept_seconds: float = Field(
        default=300.0, gt=0, description="How long an SDR has to accept an offered lead"
    )
    timer_interval_seconds: float = Field(
        default=0.25, gt=0, description="How often lapsed offers and waiting leads are looked for"
    )
    escalation_batch_size: int = Field(default=100, ge=1)
    notify_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time limit of one webhook call (connect, write, read)"
    )
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_backoff_seconds: float = Field(
        default=1.0, gt=0, description="Delay before the first retry; doubles on each retry"
    )
    notify_max_backoff_seconds: float = Field(default=300.0, gt=0)
    notify_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest sleep of the delivery loop when nothing wakes it"
    )
    notify_concurrency: int = Field(
        default=20, ge=1, description="Webhook calls in flight at once"
    )

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_base_url must be an http:// or https:// URL")
        return value.rstrip("/")
