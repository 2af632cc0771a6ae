"""router's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from shared.outbound import DestinationPolicy
from shared.settings import ServiceSettings

ROUTER_PORT = 8703


class RouterSettings(ServiceSettings):
    service_name: ClassVar[str] = "router"

    port: int = Field(default=ROUTER_PORT, ge=0, le=65535)
    public_base_url: str = Field(
        default=f"http://127.0.0.1:{ROUTER_PORT}",
        description="Where SDRs reach this service; accept links in notifications start with it",
    )
    sla_accept_seconds: float | None = Field(
        default=None, gt=0,
        description="When set, how long to accept an offer whatever the lead's temperature",
    )
    sla_hot_accept_seconds: float = Field(default=120.0, gt=0)
    sla_hot_contact_seconds: float = Field(default=300.0, gt=0)
    sla_warm_accept_seconds: float = Field(default=900.0, gt=0)
    sla_warm_contact_seconds: float = Field(default=3600.0, gt=0)
    sla_ae_accept_seconds: float = Field(default=3600.0, gt=0)
    sla_ae_contact_seconds: float = Field(default=86400.0, gt=0)
    sla_reminder_fraction: float = Field(
        default=0.5, ge=0, lt=1,
        description="Remind the rep when this share of the time to accept has passed; 0: never",
    )
    max_reoffers: int = Field(
        default=3, ge=0,
        description="Re-offers after lapsed deadlines before the lead goes to the team queue",
    )
    pause_late_rep_seconds: float = Field(
        default=0.0, ge=0, description="Pause a rep who let an offer lapse; 0: do not pause"
    )
    handover_retry_seconds: float = Field(
        default=30.0, gt=0,
        description="First retry of a qualified lead no AE could take; doubles on each retry",
    )
    handover_max_retry_seconds: float = Field(
        default=600.0, gt=0, description="Longest wait between two tries of such a hand-over"
    )
    claim_link_seconds: float = Field(
        default=86400.0, gt=0,
        description="How long the Claim link of a manager's escalation notice works, from the "
                    "moment the notice is sent",
    )
    fairness_window_hours: float = Field(default=168.0, gt=0)
    action_link_grace_seconds: float = Field(
        default=3600.0, ge=0,
        description="How long an action link (Accept in a notification) works after the "
                    "offer's deadline; its key is derived from LEADRELAY_ENCRYPTION_KEYS",
    )
    webhook_allowed_urls: str = Field(
        default="",
        description="Comma-separated URLs or origins (http://127.0.0.1:8709) webhooks may call "
                    "although they are not public internet addresses (local receivers only)",
    )
    nurture_webhook_url: str = Field(
        default="", description="The marketing tool's webhook for `lead.nurture`; empty: none"
    )
    scorer_url: str = Field(
        default="http://127.0.0.1:8702",
        description="The scorer's public HTTP API, which the console's funnel report and "
                    "scoring-model replay read (with this service's first admin token)",
    )
    nurture_webhook_secret: str = Field(default="", description="Its `whsec_...` signing secret")
    timer_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often lapsed offers and waiting leads are looked for "
        "(each look is a few statements: at 0.25 s it was the idle router's biggest cost)"
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
        default=100, ge=1,
        description="Webhook calls in flight at once (100 leads/s to endpoints answering in "
                    "300 ms need 30 per channel)"
    )

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        if "public_base_url" not in self.model_fields_set:
            missing.append("LEADRELAY_PUBLIC_BASE_URL is not set: where reps reach the router "
                           "(links in notifications start with it)")
        return missing

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("nurture_webhook_url")
    @classmethod
    def _callable_url(cls, value: str) -> str:
        """Its form is checked at start; its addresses on every call (`shared.outbound`)."""
        if value:
            DestinationPolicy().parse(value)
        return value

    @property
    def allowed_webhook_urls(self) -> list[str]:
        return [url.strip() for url in self.webhook_allowed_urls.split(",") if url.strip()]
