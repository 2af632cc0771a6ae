"""`leadrelay serve` freezes the heap a service starts with, once its start-up is done."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from leadrelay.broker import EmbeddedBroker
from leadrelay.heap import freeze_after_startup
from tests.support import SERVE_SECRETS


class Node:
    """A reference cycle's member: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap is not frozen before the test, and is given back after it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_the_heap_is_frozen_after_the_apps_startup_and_not_before(unfrozen: None) -> None:
    events: list[tuple[str, int]] = []
    left_behind: list[weakref.ref[Node]] = []

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        events.append(("startup", gc.get_freeze_count()))
        left_behind.append(weakref.ref(Node()))  # garbage start-up leaves, in a cycle
        yield
        events.append(("shutdown", gc.get_freeze_count()))

    app = freeze_after_startup(Starlette(lifespan=lifespan))
    async with app.router.lifespan_context(app):
        frozen_while_serving = gc.get_freeze_count()
        assert left_behind[0]() is None, "start-up's garbage was frozen instead of collected"

    assert events[0] == ("startup", 0)
    assert frozen_while_serving > 1000
    shutdown, frozen_at_shutdown = events[1]
    assert shutdown == "shutdown"
    assert frozen_at_shutdown > 1000, "the heap was unfrozen before shutdown"


def test_leadrelay_serve_runs_the_service_app_with_the_freezing_lifespan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: EmbeddedBroker
) -> None:
    import uvicorn

    from leadrelay.cli import main

    served: dict[str, Any] = {}

    def run(server: uvicorn.Server, sockets: list[Any] | None = None) -> None:
        served.update(app=server.config.app, factory=server.config.factory)
        for listener in sockets or []:
            listener.close()
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setenv("LEADRELAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LEADRELAY_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    for name, value in SERVE_SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "ingest", "--port", "0"]) == 0

    assert served["factory"] is True
    app = served["app"]()
    assert app.title == "leadrelay ingest"
    assert app.router.lifespan_context.__qualname__.startswith(freeze_after_startup.__name__)
