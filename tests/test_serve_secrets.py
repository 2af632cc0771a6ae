"""`leadrelay serve` refuses to start without the secrets production needs, one line for each
missing one; `leadrelay up` makes them once, keeps them in its data directory and reuses them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from leadrelay.catalog import SERVICES
from leadrelay.cli import _local_secrets
from tests.support import SERVE_SECRETS

EVERY_SECRET = ["LEADRELAY_ADMIN_TOKEN", "LEADRELAY_ENCRYPTION_KEYS"]
ROUTER_SECRETS = [*EVERY_SECRET, "LEADRELAY_PUBLIC_BASE_URL"]


def serve(name: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("LEADRELAY_") and key != "DATABASE_URL"}
    env.update(LEADRELAY_DATA_DIR=str(tmp_path), **settings)
    return subprocess.run(
        [sys.executable, "-m", "leadrelay", "serve", name, "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("name", "missing"), [
    ("ingest", EVERY_SECRET), ("scorer", EVERY_SECRET), ("router", ROUTER_SECRETS),
])
def test_serve_names_each_missing_secret_on_one_line_and_exits(
    name: str, missing: list[str], tmp_path: Path
) -> None:
    refused = serve(name, tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert [line.split(": ", 2)[1].split()[0] for line in lines] == missing
    assert all(line.startswith(f"leadrelay serve {name}: ") for line in lines)


def test_serve_names_only_what_is_still_missing(tmp_path: Path) -> None:
    refused = serve("router", tmp_path, **SERVE_SECRETS)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "leadrelay serve router: LEADRELAY_PUBLIC_BASE_URL is not set: where reps reach the "
        "router (links in notifications start with it)"
    ]


def test_up_makes_its_secrets_once_and_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ROUTER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    first = _local_secrets(tmp_path)
    again = _local_secrets(tmp_path)
    assert first == again
    assert set(first) == set(ROUTER_SECRETS)
    for kept in ("admin-token", "encryption-key"):
        assert stat.S_IMODE((tmp_path / kept).stat().st_mode) == 0o600
    for key, value in first.items():
        monkeypatch.setenv(key, value)
    for spec in SERVICES.values():
        assert spec.settings().missing_secrets() == [], spec.name


def test_up_takes_a_secret_from_the_environment_over_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _local_secrets(tmp_path)
    monkeypatch.setenv("LEADRELAY_ADMIN_TOKEN", "an-operator-chosen-token")
    assert _local_secrets(tmp_path) == {**made, "LEADRELAY_ADMIN_TOKEN":
                                        "an-operator-chosen-token"}
