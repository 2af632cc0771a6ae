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
    fairness_window_hours: float = Field(default=168.0, gt=0)
    action_secret: str = Field(
        default="",
        description="Key of the signed links in notifications; the same on every instance and "
                    "across restarts, or the links already sent stop working",
    )
    allow_private_webhooks: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback or private addresses (local demos only)",
    )
    nurture_webhook_url: str = Field(
        default="", description="The marketing tool's webhook for `lead.nurture`; empty: none"
    )
    nurture_webhook_secret: str = Field(default="", description="Its `whsec_...` signing secret")
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
        default=100, ge=1,
        description="Webhook calls in flight at once (100 leads/s to endpoints answering in "
                    "300 ms need 30 per channel)"
    )

    @property
    def action_key(self) -> str:
        """The links' key: `action_secret`; without one (tests, never `serve`), the first admin
        token; neither is a configuration error rather than a key made up per process."""
        key = self.action_secret or next(iter(self.admin_tokens), "")
        if not key:
            raise ValueError("LEADRELAY_ACTION_SECRET is not set: action links cannot be signed")
        return key

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        if not self.action_secret:
            missing.append("LEADRELAY_ACTION_SECRET is not set: the key of the signed links in "
                           "notifications (the same on every instance)")
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
