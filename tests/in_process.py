"""The three services in-process, each over its own migrated SQLite file and the real broker,
with the test admin token: the fixture the cross-service tests (auth, audit) start them with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from leadrelay.broker import EmbeddedBroker
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.router.app import create_app as create_router
from services.router.settings import RouterSettings
from services.scorer.app import create_app as create_scorer
from services.scorer.settings import ScorerSettings
from shared.settings import ServiceSettings
from tests.conftest import migrate
from tests.support import ADMIN_TOKEN, running_app

FACTORIES: dict[str, tuple[type[ServiceSettings], Callable[..., FastAPI]]] = {
    "ingest": (IngestSettings, create_ingest),
    "scorer": (ScorerSettings, create_scorer),
    "router": (RouterSettings, create_router),
}

@pytest.fixture
def started(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> Callable[..., Any]:
    """`started(name, **settings)`: the service in-process, over its migrated SQLite file."""
    urls = {name: f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}" for name in FACTORIES}
    for name, url in urls.items():
        migrate(name, url)

    def start(name: str, **overrides: Any) -> Any:
        cls, factory = FACTORIES[name]
        values: dict[str, Any] = {
            "database_url": urls[name], "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_topic_prefix": topic_prefix, "admin_token": ADMIN_TOKEN, **overrides,
        }
        return running_app(factory(cls(**values)))

    return start
