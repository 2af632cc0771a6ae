"""scorer's settings (environment variables prefixed `LEADRELAY_`, see `shared.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from shared.settings import ServiceSettings

SCORER_PORT = 8702


class ScorerSettings(ServiceSettings):
    service_name: ClassVar[str] = "scorer"

    port: int = Field(default=SCORER_PORT, ge=0, le=65535)
    scoring_model_path: Path | None = Field(
        default=None,
        description="YAML scoring model to publish at start instead of the one shipped",
    )
    scoring_model_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often each instance re-reads the model in force"
    )
    decay_sweep_seconds: float = Field(
        default=30.0, gt=0, description="How often the sweep looks for leads that cooled down"
    )
    decay_sweep_batch_size: int = Field(
        default=200, ge=1, description="Leads rescored per sweep transaction"
    )
    kafka_max_batch: int = Field(
        default=2000, ge=1,
        description="Records per consumer poll. Larger than the other services' default: the "
        "scorer decides each lead once per batch, so a backlog drains with fewer computations "
        "and statements; a batch holds its transaction (on SQLite the write lock) while applied",
    )
    scorer_lanes: Literal["all", "leads", "signals"] = Field(
        default="all",
        description="What this process consumes. `all`: everything, the campaigns' signals "
        "(`leadrelay.signals`) by a consumer of their own; `leads`: all but those signals (it "
        "also relays the outbox and runs the decay sweep); `signals`: only those signals, "
        "publishing nothing itself (the `leads` process relays what it writes). Run one `leads` "
        "and one `signals` process so that a campaign never takes CPU from a new lead",
    )
    signal_batch: int = Field(
        default=50, ge=1,
        description="Records of the campaigns' signals (`leadrelay.signals`) per batch. A "
        "batch holds the write lock while applied (on SQLite, the whole file's): in the same "
        "process or not, a new lead waits for at most one such batch",
    )
    signals_idle_fetch_max_wait_ms: int = Field(
        default=2000, ge=0, le=10_000,
        description="`LEADRELAY_KAFKA_IDLE_FETCH_MAX_WAIT_MS` of the campaigns' signals' "
        "consumer: nobody waits for an email open by the second, so once idle it asks the "
        "broker less often; the first signal after a quiet spell waits up to this long",
    )
