"""Where `leadrelay up` keeps its data: the demo apart, so a later plain `up` starts clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadrelay.cli import clear_databases, data_dir_of


def test_the_demo_keeps_its_data_apart_from_a_plain_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADRELAY_DATA_DIR", str(tmp_path / "kept"))
    assert data_dir_of(None, demo=False) == tmp_path / "kept"
    assert data_dir_of(None, demo=True) == tmp_path / "kept" / "demo"
    assert data_dir_of(tmp_path / "mine", demo=True) == tmp_path / "mine"


def test_clearing_the_demo_removes_its_databases_and_keeps_its_secrets(tmp_path: Path) -> None:
    for name in ("router.db", "router.db-wal", "scorer.db", "admin-token"):
        (tmp_path / name).write_text("x")
    clear_databases(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["admin-token"]
