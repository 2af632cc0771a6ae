"""The deployment files: docker-compose.yml, deploy/Dockerfile and .dockerignore.

No Docker engine runs where the tests do, so these check structure: the services compose starts,
how they depend on one another, their health checks, ports, URLs and environment variable names
against the code (the catalog's ports, the settings classes' fields). The health check one-liner
of the application services is also run for real, against a stub HTTP server.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from leadrelay.catalog import SERVICES
from leadrelay.harness.kafka_jars import KAFKA_VERSION
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = sorted(SERVICES)
INFRA_SERVICES = ["kafka", "postgres", "migrate"]
REQUIRED = {
    "LEADRELAY_ADMIN_TOKEN": "an-admin-token-0123456789",
    "LEADRELAY_ENCRYPTION_KEYS": "3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w4=",
    "LEADRELAY_PUBLIC_BASE_URL": "https://leads.example.com",
}
"""Stand-ins for the variables compose requires (`${NAME:?message}`)."""


# --- helpers ------------------------------------------------------------------------------------


def _interpolate(value: Any) -> Any:
    """Resolve compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` / `$$` like compose
    would with none of the variables set: the defaults the file ships with. A required one
    (`${NAME:?message}`) gets the stand-in value of `REQUIRED`, as if the operator had set it."""
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("required") is not None:
            return REQUIRED[match.group("name")]
        return match.group("default") or ""

    pattern = (r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
               r"(?::?-(?P<default>[^}]*)|:\?(?P<required>[^}]*))?\}")
    return re.sub(pattern, replace, value)


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing at the repository root"
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    document = yaml.safe_load(compose_text)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, list or mapping form, with the file's defaults interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {
        str(key): "" if value is None else str(value) for key, value in _interpolate(raw).items()
    }


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command is {command!r}"
    return [str(part) for part in command]


def _option(argv: list[str], name: str) -> str | None:
    for index, part in enumerate(argv):
        if part == name and index + 1 < len(argv):
            return argv[index + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    return None


def _published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, target) pairs, short (`[IP:]HOST:CONTAINER[/proto]`) or long syntax."""
    pairs: list[tuple[int, int]] = []
    for entry in _interpolate(service.get("ports") or []):
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published on the host"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _restart(service: dict[str, Any]) -> str:
    """The restart policy; YAML reads an unquoted `no` as False."""
    policy = service.get("restart")
    return "no" if policy in (None, False, "no") else str(policy)


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):  # the short form means service_started
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def _healthcheck_test(service: dict[str, Any]) -> list[str]:
    check = service.get("healthcheck")
    assert isinstance(check, dict), "no healthcheck"
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    assert isinstance(test, list) and test, f"healthcheck test is {test!r}"
    assert test[0] in {"CMD", "CMD-SHELL"}, f"healthcheck test starts with {test[0]!r}"
    return [str(part) for part in test]


def _settings_class(name: str) -> type[ServiceSettings]:
    """The service's settings class, as the catalog finds it; the shared fields until the
    service's `settings` module exists (scorer and router are being written)."""
    module_name = f"{SERVICES[name].package}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name not in {module_name, SERVICES[name].package}:
            raise
        return type(f"{name.title()}Settings", (ServiceSettings,), {"service_name": name})
    return next(
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.service_name == name
    )


def _env_names(cls: type[ServiceSettings]) -> set[str]:
    """Every environment variable pydantic-settings reads for `cls` (upper-cased)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.update(
                choice.upper()
                for choice in getattr(alias, "choices", [])
                if isinstance(choice, str)
            )
    return names


# --- the services compose starts -----------------------------------------------------------------


def test_compose_declares_every_service(services: dict[str, dict[str, Any]]) -> None:
    missing = set(INFRA_SERVICES + APP_SERVICES) - set(services)
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_app_services_share_the_extension_block(compose_text: str) -> None:
    """`x-leadrelay-service` is defined once and merged (`<<: *anchor`) into each service."""
    root = yaml.compose(compose_text)
    assert isinstance(root, yaml.MappingNode)
    top = {key.value: value for key, value in root.value}
    assert "x-leadrelay-service" in top, "the x-leadrelay-service extension field is gone"
    shared_block = top["x-leadrelay-service"]
    service_nodes = {key.value: value for key, value in top["services"].value}
    for name in APP_SERVICES:
        merged = [
            value
            for key, value in service_nodes[name].value
            if key.tag == "tag:yaml.org,2002:merge"
        ]
        assert any(node is shared_block for node in merged), (
            f"{name} does not merge x-leadrelay-service"
        )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_serves_itself(services: dict[str, dict[str, Any]], name: str) -> None:
    argv = _command(services[name])
    assert argv[:2] == ["serve", name], f"{name} runs {argv!r}"
    assert _option(argv, "--host") == "0.0.0.0", f"{name} does not listen on every interface"
    port = _option(argv, "--port")
    if port is not None:
        assert int(port) == SERVICES[name].port, f"{name} --port {port}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_waits_for_its_dependencies(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = _depends_on(services[name])
    for dependency, condition in (
        ("postgres", "service_healthy"),
        ("kafka", "service_healthy"),
        ("migrate", "service_completed_successfully"),
    ):
        assert depends_on.get(dependency) == condition, (
            f"{name} depends on {dependency} with {depends_on.get(dependency)!r}"
        )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_restarts_and_uses_the_project_image(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service.get("restart") == "unless-stopped"
    assert service.get("image") == services["migrate"].get("image"), (
        f"{name} and migrate run different images"
    )
    build = service.get("build")
    assert isinstance(build, dict), f"{name} has no build section"
    assert (COMPOSE_FILE.parent / build.get("context", ".") / build["dockerfile"]).resolve() == (
        DOCKERFILE.resolve()
    )


def test_migrate_is_a_one_shot_job(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert _command(migrate)[0] == "migrate"
    assert _depends_on(migrate) == {"postgres": "service_healthy"}
    # A job that completes must not be restarted, or service_completed_successfully never holds.
    assert _restart(migrate) == "no"
    assert not migrate.get("ports")
    assert _environment(migrate).get("DATABASE_URL") == _environment(services["ingest"]).get(
        "DATABASE_URL"
    ), "migrate and the services would use different databases"


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if _restart(service) == "no":
            continue
        _healthcheck_test(service)
        assert _restart(service) == "unless-stopped", f"{name} restart policy"
    # the job is the only service that is not kept running
    assert {name for name, service in services.items() if _restart(service) == "no"} == {"migrate"}


# --- the application services' health check, for real --------------------------------------------


class _StubReadyz(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # http.server dispatches GET here
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def stub_server() -> Iterator[tuple[int, type[_StubReadyz]]]:
    handler = type("Handler", (_StubReadyz,), {"status": 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_health_check_probes_readyz_on_its_own_port(
    services: dict[str, dict[str, Any]],
    name: str,
    stub_server: tuple[int, type[_StubReadyz]],
) -> None:
    service = services[name]
    port = SERVICES[name].port
    environment = _environment(service)
    test = _healthcheck_test(service)
    assert test[0] == "CMD", "use the exec form: python, not a shell, runs the check"
    argv = test[1:]
    assert argv[0] in {"python", "python3"}, "slim images have no curl: check with python"
    code = argv[argv.index("-c") + 1]
    assert "/readyz" in code, f"{name}'s health check does not probe /readyz"
    if "LEADRELAY_PORT" in code:
        assert environment.get("LEADRELAY_PORT") == str(port), (
            f"{name}'s health check reads LEADRELAY_PORT={environment.get('LEADRELAY_PORT')!r}"
        )
    else:
        assert f":{port}/readyz" in code, f"{name}'s health check probes another port"

    stub_port, handler = stub_server
    probe_env = {**os.environ, "LEADRELAY_PORT": str(stub_port)}
    probe = [sys.executable, *argv[1:]]
    probe[probe.index("-c") + 1] = code.replace(f":{port}/", f":{stub_port}/")

    ready = subprocess.run(probe, env=probe_env, capture_output=True, timeout=30, check=False)
    assert ready.returncode == 0, ready.stderr.decode()
    assert handler.paths == ["/readyz"]

    handler.status = 503
    not_ready = subprocess.run(probe, env=probe_env, capture_output=True, timeout=30, check=False)
    assert not_ready.returncode != 0, "the health check passes while /readyz answers 503"


# --- Kafka and PostgreSQL -----------------------------------------------------------------------


def test_compose_runs_the_kafka_version_the_tests_run(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_kafka_runs_kraft_single_node(
    services: dict[str, dict[str, Any]], compose_text: str
) -> None:
    kafka = services["kafka"]
    assert str(kafka.get("image", "")).startswith("apache/kafka:")
    assert "zookeeper" not in compose_text.lower()
    env = _environment(kafka)
    roles = {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert {"broker", "controller"} <= roles
    for required in (
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    ):
        assert env.get(required), f"kafka lacks {required}"
    # The quorum is this node, on the controller listener.
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = dict(reversed(item.split("://", 1)) for item in env["KAFKA_LISTENERS"].split(","))
    listener_ports = {name: address.rsplit(":", 1)[1] for address, name in listeners.items()}
    assert controller in listener_ports, "the controller listener is not among KAFKA_LISTENERS"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{env['KAFKA_NODE_ID']}@kafka:{listener_ports[controller]}"
    )
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listener_ports) <= set(protocols), "a listener has no security protocol"
    # Single node: internal topics with one replica, no surprise topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in " ".join(_healthcheck_test(kafka))


def test_postgres_is_16_with_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:16([.-].*)?", str(postgres.get("image"))), postgres.get("image")
    assert "pg_isready" in " ".join(_healthcheck_test(postgres))
    named = {
        str(volume).split(":", 1)[0]
        for volume in postgres.get("volumes") or []
        if ":" in str(volume) and str(volume).split(":", 1)[1].startswith("/var/lib/postgresql")
    }
    assert named, "postgres keeps its data in no volume"
    assert named <= set(compose.get("volumes") or {}), "postgres' volume is not a named volume"


def test_credentials_come_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    raw = services["postgres"]["environment"]
    assert "${POSTGRES_PASSWORD" in str(raw["POSTGRES_PASSWORD"]), "a hard-coded password"
    for name in APP_SERVICES:
        assert "${POSTGRES_PASSWORD" in str(services[name]["environment"]["DATABASE_URL"])


# --- ports and URLs agree with the code ----------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_published_ports_match_the_catalog(services: dict[str, dict[str, Any]], name: str) -> None:
    port = SERVICES[name].port
    assert _published_ports(services[name]) == [(port, port)]


def test_infrastructure_is_not_published(services: dict[str, dict[str, Any]]) -> None:
    """Only the HTTP services face the outside; Kafka and PostgreSQL stay on compose's network."""
    for name in ("kafka", "postgres"):
        assert not services[name].get("ports"), f"{name} is published on the host"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_database_url_points_at_the_postgres_service(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = _environment(services[name])
    url = env.get(f"LEADRELAY_{name.upper()}_DATABASE_URL") or env.get("DATABASE_URL")
    assert url, f"{name} has no database URL"
    parts = urlsplit(url)
    assert parts.scheme in {"postgres", "postgresql", "postgresql+asyncpg"}
    assert parts.hostname == "postgres"
    assert parts.port in {None, 5432}
    pg = _environment(services["postgres"])
    assert parts.username == pg["POSTGRES_USER"]
    assert parts.password == pg["POSTGRES_PASSWORD"]
    assert parts.path.lstrip("/") == pg["POSTGRES_DB"]


@pytest.mark.parametrize("name", [*APP_SERVICES, "migrate"])
def test_bootstrap_servers_point_at_the_kafka_listener(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = _environment(services[name])
    servers = env.get("LEADRELAY_KAFKA_BOOTSTRAP_SERVERS") or env.get("KAFKA_BOOTSTRAP_SERVERS")
    if name == "migrate" and not servers:
        return  # migrations do not talk to the broker
    assert servers, f"{name} has no bootstrap servers: it would look for the embedded broker"
    kafka = _environment(services["kafka"])
    advertised = {
        item.split("://", 1)[1] for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for server in servers.split(","):
        assert server.strip() in advertised, f"{server} is not an advertised kafka listener"
        assert server.strip().startswith("kafka:")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_leadrelay_variables_are_settings_fields(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    known = _env_names(_settings_class(name)) | {
        f"LEADRELAY_{service.upper()}_DATABASE_URL" for service in SERVICES
    }
    unknown = {
        key
        for key in _environment(services[name])
        if key.upper().startswith("LEADRELAY_") and key.upper() not in known
    }
    assert not unknown, f"{name}: no settings field reads {sorted(unknown)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_loads_into_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values parse: what the service would see at start-up, built from compose's env."""
    for key in list(os.environ):
        if key.upper().startswith("LEADRELAY_") or key.upper() in {
            "DATABASE_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
        }:
            monkeypatch.delenv(key)
    for key, value in _environment(services[name]).items():
        monkeypatch.setenv(key, value)
    settings = _settings_class(name)()
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert urlsplit(settings.database_url).hostname == "postgres"
    assert settings.kafka_bootstrap_servers.split(":")[0] == "kafka"
    assert settings.kafka_enable_idempotence is True, "real Kafka: the idempotent producer"
    if "LEADRELAY_PORT" in _environment(services[name]):
        assert settings.port == SERVICES[name].port
    assert settings.missing_secrets() == [], "serve would refuse to start"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_requires_every_secret_serve_needs(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """No default for a secret: `${NAME:?message}`, so compose stops when one is not set."""
    raw = services[name]["environment"]
    required = {
        key for key, value in raw.items()
        if re.fullmatch(rf"\$\{{{re.escape(key)}:\?[^}}]+\}}", str(value))
    }
    wanted = {"LEADRELAY_ADMIN_TOKEN", "LEADRELAY_ENCRYPTION_KEYS"}
    if name == "router":
        wanted |= {"LEADRELAY_PUBLIC_BASE_URL"}
    assert required == wanted


# --- the image -----------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    assert DOCKERFILE.is_file(), "deploy/Dockerfile is missing"
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append((keyword, arguments))
    return stages


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2, "build the wheel in one stage, install it in a clean one"
    for stage in stages:
        assert re.match(r"python:3\.11-slim\b", stage[0][1]), stage[0][1]


def test_dockerfile_builds_a_wheel_and_installs_it_without_dev_dependencies() -> None:
    build, runtime = _stages()[0], _stages()[-1]
    build_runs = " ".join(arguments for keyword, arguments in build if keyword == "RUN")
    assert re.search(r"pip wheel|python -m build|uv build", build_runs), "no wheel is built"
    runtime_runs = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert re.search(r"pip install .*(--find-links|\.whl)", runtime_runs), (
        "the runtime stage does not install the built wheel"
    )
    everything = " ".join(arguments for _, arguments in _dockerfile_instructions())
    assert "[test]" not in everything, "the test extra (dev tools) ends up in the image"
    # The runtime stage gets no source tree from the build context: wheels only.
    assert not [
        arguments
        for keyword, arguments in runtime
        if keyword in {"COPY", "ADD"} and "--from" not in arguments
    ]


def test_dockerfile_copies_every_package_the_wheel_needs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    copied = {
        arguments.split()[0].rstrip("/")
        for keyword, arguments in _stages()[0]
        if keyword == "COPY" and "--from" not in arguments
    }
    assert "pyproject.toml" in " ".join(
        arguments for keyword, arguments in _stages()[0] if keyword == "COPY"
    )
    assert top_level <= copied, f"the build stage does not copy {sorted(top_level - copied)}"


def test_dockerfile_runs_leadrelay_as_a_non_root_user() -> None:
    runtime = _stages()[-1]
    entrypoints = [arguments for keyword, arguments in runtime if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["leadrelay"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "leadrelay" in scripts, "the image's entry point is not a console script any more"
    assert [arguments for keyword, arguments in runtime if keyword == "CMD"], "no default CMD"
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0", ""}, f"USER {users[-1]}"
    env = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert re.search(r"PYTHONDONTWRITEBYTECODE=1", env)
    assert re.search(r"PYTHONUNBUFFERED=1", env)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        bodies = {body, body.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(candidate, b) for candidate in candidates for b in bodies):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing at the repository root"
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for unwanted in (
        ".git/HEAD",
        "tests/conftest.py",
        ".venv/bin/python",
        ".leadrelay/ingest.db",
        "services/ingest/__pycache__/app.cpython-311.pyc",
        ".env",
    ):
        assert _dockerignored(unwanted, patterns), f"{unwanted} goes into the build context"
    sources = [
        arguments.split()
        for keyword, arguments in _stages()[0]
        if keyword == "COPY" and "--from" not in arguments
    ]
    for source in (path for copy in sources for path in copy[:-1]):
        if any(char in source for char in "*?["):
            continue  # optional files (README.md*)
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not _dockerignored(source.rstrip("/"), patterns), f"COPY {source} is dockerignored"
    for module in (
        "services/ingest/app.py",
        "services/ingest/migrations/env.py",
        "services/ingest/migrations/script.py.mako",
        "shared/settings.py",
    ):
        assert not _dockerignored(module, patterns), f"{module} is left out of the image"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_passes_the_trace_exporter_through_and_exports_nothing_by_default(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    from shared.tracing import export_configured

    environment = _environment(services[name])
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in environment, "compose drops the OTLP endpoint"
    assert export_configured(environment) is False, "no collector set: no spans"
    assert export_configured({**environment,
                              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
