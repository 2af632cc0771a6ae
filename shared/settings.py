"""Settings common to every service, read from environment variables and validated at start.

Each service subclasses `ServiceSettings` and sets `service_name`. The database URL is looked up
as `LEADRELAY_<SERVICE>_DATABASE_URL`, then `DATABASE_URL`, then falls back to an SQLite file in
the data directory (the embedded default). The Kafka bootstrap servers come from
`LEADRELAY_KAFKA_BOOTSTRAP_SERVERS` (or `KAFKA_BOOTSTRAP_SERVERS`), with a security protocol,
SASL credentials and TLS files; security settings that contradict each other (SASL without a
user name, a client key without its certificate) fail validation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.auth import parse_tokens
from shared.events import Topics

EMBEDDED_BROKER_PORT = 19092
DEFAULT_DATA_DIR = Path(".leadrelay")
MIN_TOKEN_LENGTH = 16


class ServiceSettings(BaseSettings):
    """Configuration every service needs: its database, the broker and the delivery knobs."""

    # populate_by_name: a field with environment aliases (KAFKA_BOOTSTRAP_SERVERS) still takes
    # its own name as a keyword; pydantic-settings 2.14 ignored the keyword without it.
    model_config = SettingsConfigDict(env_prefix="LEADRELAY_", extra="ignore",
                                      populate_by_name=True)

    service_name: ClassVar[str] = "service"

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = Field(default="", description="SQLAlchemy async URL; empty: SQLite file")
    kafka_bootstrap_servers: str = Field(
        default=f"127.0.0.1:{EMBEDDED_BROKER_PORT}",
        validation_alias=AliasChoices(
            "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    kafka_topic_prefix: str = Field(default="leadrelay", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    kafka_enable_idempotence: bool = Field(
        default=False, description="Idempotent producer; the embedded broker rejects it"
    )
    kafka_topic_partitions: int = Field(
        default=16, ge=1,
        description="Partitions of the topics a service creates; each fetch of the embedded "
        "broker lists every record batch of the partition, so short partitions keep it cheap",
    )
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1,
        description="min.insync.replicas of the topics a service creates (a topic config); "
        "unset: the broker's default. With acks=all, a write needs this many replicas",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle the broker's certificate is checked against; "
        "unset: the system's CAs",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (chain), for brokers that ask for one",
    )
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr = SecretStr("")
    kafka_startup_timeout_seconds: float = Field(
        default=5.0, gt=0,
        description="How long `leadrelay serve` waits for an unreachable broker before it stops "
        "with an error; a refused login stops it at once",
    )
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=1, le=10_000)
    kafka_idle_fetch_max_wait_ms: int = Field(
        default=500, ge=0, le=10_000,
        description="Fetch wait of a consumer that has had nothing for 2 s (the embedded "
        "broker answers a waiting fetch only when the wait ends, so the wait is a poll period); "
        "the first event after a quiet spell waits up to this much longer. 0: never lengthened",
    )
    kafka_commit_interval_ms: int = Field(
        default=200, ge=0, le=60_000,
        description="Least time between two offset commits of a consumer",
    )
    kafka_slow_topic_interval_ms: int = Field(
        default=250, ge=10, le=60_000,
        description="How often a consumer visits the topics it reads off the hot path (the "
        "scorer's assignment events); between visits their partitions are left out of fetches",
    )
    kafka_topic_check_seconds: float = Field(default=10.0, gt=0)
    kafka_max_batch: int = Field(default=500, ge=1)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_shards: int = Field(default=16, ge=1, le=1024)
    outbox_retention_hours: float = Field(default=24.0, ge=0)
    outbox_republish_minutes: float = Field(
        default=10.0, ge=0,
        description="When the broker turns out to be a new one (the embedded broker lost its "
                    "memory), the events published in this many minutes before the newest one "
                    "are published again: how far behind a consumer may be when that happens",
    )
    processed_event_retention_hours: float = Field(
        default=168.0, gt=0,
        description="Processed-event records (the consumers' idempotency) older than this are "
                    "purged; far longer than any redelivery",
    )
    lead_keys_url: str = Field(
        default="http://127.0.0.1:8701",
        description="ingest, which hands out the leads' data keys that open their sealed "
                    "events (several instances comma-separated: each tried in turn); empty: "
                    "sealed events are skipped and this service's own events go out unsealed "
                    "(a service run alone in tests)",
    )
    lead_keys_token: str = Field(
        default="",
        description="Bearer token of ingest's key route (an admin token of ingest); empty: "
                    "the first of this service's own admin tokens",
    )
    encryption_keys: str = Field(
        default="",
        description="Fernet keys (comma-separated, newest first) that encrypt secrets and "
                    "personal data at rest; the first encrypts, every one decrypts",
    )
    admin_token: str = Field(
        default="",
        description="Bearer token(s) of the admin routes, comma-separated: during a rotation "
                    "the old and the new one both work; unset: no admin route answers",
    )
    metrics_token: str = Field(
        default="", description="Bearer token(s) `/metrics` asks for; unset: `/metrics` is open"
    )
    log_level: str = "INFO"
    log_format: Literal["json", "plain"] = Field(
        default="json",
        description="json: one JSON object a line (service, level, event, correlation, lead "
                    "and trace ids); plain: readable text lines",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _long_tokens(cls, value: str) -> str:
        if any(len(token) < MIN_TOKEN_LENGTH for token in parse_tokens(value)):
            raise ValueError(f"each token needs at least {MIN_TOKEN_LENGTH} characters")
        return value

    _database_url_variable: str = PrivateAttr(default="LEADRELAY_DATABASE_URL")

    @model_validator(mode="after")
    def _resolve_database_url(self) -> Self:
        variable = "LEADRELAY_DATABASE_URL"
        if not self.database_url:
            for variable in (f"LEADRELAY_{self.service_name.upper()}_DATABASE_URL",
                             "DATABASE_URL"):
                if os.environ.get(variable):
                    self.database_url = os.environ[variable]
                    break
            else:
                variable, self.database_url = "LEADRELAY_DATA_DIR", self.default_sqlite_url()
        self.database_url = normalise_database_url(self.database_url)
        problem = database_url_problem(self.database_url)
        if problem:
            raise ValueError(f"{variable}: {problem}")
        self._database_url_variable = variable
        return self

    @property
    def database_url_variable(self) -> str:
        """The environment variable the database URL came from, to name it in an error."""
        return self._database_url_variable

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Self:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def default_sqlite_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        return parse_tokens(self.admin_token)

    @property
    def lead_keys_bearer(self) -> str | None:
        """The token this service shows ingest's key route."""
        return self.lead_keys_token or next(iter(self.admin_tokens), None)

    def missing_secrets(self) -> list[str]:
        """What production needs and is not set: one line per missing setting, for `serve`."""
        missing = []
        if not self.admin_tokens:
            missing.append("LEADRELAY_ADMIN_TOKEN is not set: the bearer token of the admin "
                           "routes (comma-separated during a rotation)")
        if not self.encryption_keys.strip():
            missing.append("LEADRELAY_ENCRYPTION_KEYS is not set: the Fernet key(s) that encrypt "
                           "secrets at rest (the router's action links are signed with a key "
                           "derived from them)")
        return missing

    @property
    def consumer_group(self) -> str:
        return f"{self.kafka_topic_prefix}-{self.service_name}"

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka_topic_prefix)


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `sqlite:///`...); pick the async drivers."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


SUPPORTED_DATABASES = {"postgresql+asyncpg": "PostgreSQL", "sqlite+aiosqlite": "SQLite"}
"""The SQLAlchemy drivers the services run on, after `normalise_database_url`."""


def database_url_problem(url: str) -> str | None:
    """Why `url` cannot be a service's database, in words an operator can act on (no password:
    the URL itself is never repeated); None when it can."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a non-numeric port fails only when read
    except (ArgumentError, ValueError):
        return ("not a database URL; expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                "or sqlite:///PATH")
    if parsed.drivername not in SUPPORTED_DATABASES:
        return (f"unsupported database {parsed.drivername!r}; use postgresql://... "
                "(PostgreSQL) or sqlite:///... (SQLite)")
    if parsed.get_backend_name() == "postgresql" and not parsed.host:
        return "the PostgreSQL URL names no host: postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    return None


def kafka_security_problem(settings: ServiceSettings) -> str | None:
    """What makes the Kafka security settings inconsistent, in one line; None when they agree."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    if sasl and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        return (f"LEADRELAY_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "LEADRELAY_KAFKA_SASL_USERNAME and LEADRELAY_KAFKA_SASL_PASSWORD")
    if not sasl and (settings.kafka_sasl_username or settings.kafka_sasl_password):
        return (f"LEADRELAY_KAFKA_SASL_USERNAME/PASSWORD are set but "
                f"LEADRELAY_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(SASL_PLAINTEXT or SASL_SSL does)")
    files = {"LEADRELAY_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
             "LEADRELAY_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
             "LEADRELAY_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile}
    given = [name for name, path in files.items() if path is not None]
    if given and not tls:
        return (f"{', '.join(given)} set but LEADRELAY_KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use TLS (SSL or SASL_SSL does)")
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        return "LEADRELAY_KAFKA_SSL_CERTFILE and LEADRELAY_KAFKA_SSL_KEYFILE go together"
    for name in given:
        path = files[name]
        assert path is not None
        if not path.is_file():
            return f"{name}={path}: no such file"
    replicas, min_insync = settings.kafka_replication_factor, settings.kafka_min_insync_replicas
    if min_insync is not None and min_insync > replicas:
        return (f"LEADRELAY_KAFKA_MIN_INSYNC_REPLICAS={min_insync} is more than "
                f"LEADRELAY_KAFKA_REPLICATION_FACTOR={replicas}: no write could succeed")
    return None


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build settings from the environment, or stop the process with a readable message."""
    try:
        return cls()
    except ValidationError as error:
        print("\n".join(settings_error_lines(cls, error)), file=sys.stderr)
        raise SystemExit(2) from None


def settings_error_lines(cls: type[ServiceSettings], error: ValidationError) -> list[str]:
    """One line per bad variable, each naming it: `leadrelay SERVICE: VARIABLE: problem`."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if where:
            lines.append(f"leadrelay {cls.service_name}: LEADRELAY_{where.upper()}: {message}")
        else:  # a check across fields: its message names the variables
            lines.append(f"leadrelay {cls.service_name}: {message}")
    return lines
