"""Settings: database URL precedence, driver normalisation, failing fast with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from shared.settings import ServiceSettings, load_settings, normalise_database_url


class ExampleSettings(ServiceSettings):
    service_name: ClassVar[str] = "example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "LEADRELAY_EXAMPLE_DATABASE_URL", "LEADRELAY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_default_is_an_sqlite_file_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEADRELAY_DATA_DIR", str(tmp_path))
    assert ExampleSettings().database_url == f"sqlite+aiosqlite:///{tmp_path}/example.db"


def test_service_specific_url_wins_over_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://shared@db/leads")
    assert ExampleSettings().database_url == "postgresql+asyncpg://shared@db/leads"
    monkeypatch.setenv("LEADRELAY_EXAMPLE_DATABASE_URL", "postgresql://own@db/example")
    assert ExampleSettings().database_url == "postgresql+asyncpg://own@db/example"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_pasted_urls_get_async_drivers(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_kafka_bootstrap_accepts_the_conventional_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert ExampleSettings().kafka_bootstrap_servers == "kafka:9092"


def test_a_field_with_environment_aliases_still_takes_its_own_name_as_a_keyword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    given = ExampleSettings(kafka_bootstrap_servers="127.0.0.1:40001")
    assert given.kafka_bootstrap_servers == "127.0.0.1:40001"


def test_invalid_value_stops_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADRELAY_KAFKA_TOPIC_PARTITIONS", "zero")
    with pytest.raises(SystemExit) as stopped:
        load_settings(ExampleSettings)
    assert stopped.value.code == 2
    assert "LEADRELAY_KAFKA_TOPIC_PARTITIONS" in capsys.readouterr().err
