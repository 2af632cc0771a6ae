"""The services the command knows: where their code, migrations and ports are."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from shared.settings import ServiceSettings, load_settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int

    @property
    def package(self) -> str:
        return f"services.{self.name}"

    @property
    def app_factory(self) -> str:
        return f"{self.package}.app:create_app"

    @property
    def migrations_dir(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise LookupError(f"service package {self.package} is not installed")
        return Path(spec.origin).parent / "migrations"

    @property
    def version_table(self) -> str:
        return f"{self.name}_alembic_version"

    def settings(self) -> ServiceSettings:
        """The service's settings from the environment; exits with a clear message if invalid."""
        module = importlib.import_module(f"{self.package}.settings")
        cls = next(
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ServiceSettings)
            and value.service_name == self.name
        )
        settings: ServiceSettings = load_settings(cls)
        return settings


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("ingest", 8701),
        ServiceSpec("scorer", 8702),
        ServiceSpec("router", 8703),
    )
}

SECRET_HOLDERS: dict[str, str] = {
    "ingest": "services.ingest.sources:reencrypt_sources",
    "router": "services.router.channels:reencrypt_channels",
}
"""Services that store encrypted secrets, and what re-encrypts them (`leadrelay reencrypt`)."""
