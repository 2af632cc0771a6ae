"""The `leadrelay` command line.

    leadrelay up [--demo]        broker + databases + the three services on one machine
    leadrelay demo               a demo team, sample leads, routing printed as it happens
    leadrelay serve SERVICE      one service in the foreground (production)
    leadrelay migrate [SERVICE]  apply database migrations
    leadrelay reencrypt [SERVICE]  encrypt stored secrets again with the newest key
    leadrelay import FILE.csv --source KEY   bulk import of leads through ingest's API
    leadrelay dead-letters list|show|replay|purge SERVICE   events a service could not apply
    leadrelay broker             the embedded broker alone

A setting or a dependency that keeps a command from starting is one line on stderr and a
non-zero exit; `--debug` shows the traceback of anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from leadrelay import dead_letters
from leadrelay.broker import EmbeddedBroker, embedded_consumer_env, wait_for_port
from leadrelay.catalog import SECRET_HOLDERS, SERVICES
from leadrelay.preflight import (
    StartupError,
    bind_listener,
    check_broker,
    check_database,
    check_port_free,
)
from leadrelay.processes import (
    SCORER_SIGNALS_PORT,
    ServiceProcess,
    scorer_signals_beside,
    wait_until_ready,
)
from shared.settings import DEFAULT_DATA_DIR, EMBEDDED_BROKER_PORT

DEMO_RECEIVER_PORT = 8709

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except StartupError as error:
        print(f"leadrelay {args.command}: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        text = " ".join(str(error).split()) or "no message"
        print(f"leadrelay {args.command}: {type(error).__name__}: {text} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadrelay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error")
    # Also accepted after the command (`leadrelay serve ingest --debug`).
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", parents=[debug],
                             help="run everything on this machine (embedded default)")
    up.add_argument("--data-dir", type=Path, default=None,
                    help=f"where the SQLite files and logs go (default {DEFAULT_DATA_DIR}/)")
    up.add_argument("--demo", action="store_true",
                    help="also run the demo once ready (in DATA_DIR/demo/, emptied first)")
    up.add_argument("--sla-seconds", type=float, default=None,
                    help="seconds an SDR has to accept (default 300; 20 with --demo)")
    up.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(run=_up)

    demo = commands.add_parser("demo", help="demo team and sample leads against a running system")
    demo.add_argument("--ingest-url", default=f"http://127.0.0.1:{SERVICES['ingest'].port}")
    demo.add_argument("--router-url", default=f"http://127.0.0.1:{SERVICES['router'].port}")
    demo.add_argument("--receiver-port", type=int, default=DEMO_RECEIVER_PORT)
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", parents=[debug],
                                help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(SERVICES))
    migrate.set_defaults(run=_migrate)

    reencrypt = commands.add_parser(
        "reencrypt", help="encrypt stored secrets again with the newest LEADRELAY_ENCRYPTION_KEYS "
                          "key (after a rotation, before the old key is dropped)")
    reencrypt.add_argument("services", nargs="*", metavar="SERVICE",
                           help=", ".join(SECRET_HOLDERS))
    reencrypt.set_defaults(run=_reencrypt)

    imports = commands.add_parser(
        "import", help="bulk import leads from a CSV file through ingest's API (safe to re-run)")
    imports.add_argument("file", type=Path, metavar="FILE.csv", help="with a header row")
    imports.add_argument("--source", required=True, metavar="KEY",
                         help="the ingest source the leads come from (its field mapping is used)")
    imports.add_argument("--ingest-url", default=f"http://127.0.0.1:{SERVICES['ingest'].port}")
    imports.add_argument("--admin-token", default=None,
                         help="to read the source (default: LEADRELAY_ADMIN_TOKEN, or the "
                              "token `leadrelay up` wrote in the data directory)")
    imports.add_argument("--errors", type=Path, default=None, metavar="FILE.csv",
                         help="also write the refused rows (row, column, field, message) here")
    imports.add_argument("--encoding", default=None,
                         help="the file's encoding (default: UTF-8 if it decodes, else "
                              "Windows-1252)")
    imports.add_argument("--delimiter", default=None, choices=[",", ";", "tab", "|"],
                         help="the file's delimiter (default: the one its header holds most of)")
    imports.set_defaults(run=_import)

    dead_letters.add_parser(commands)

    broker = commands.add_parser("broker", parents=[debug],
                                 help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=int, default=EMBEDDED_BROKER_PORT)
    broker.set_defaults(run=_broker)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.importer import import_from_string

    from leadrelay.heap import freeze_after_startup
    from leadrelay.one_write_responses import OneWriteH11Protocol
    from leadrelay.quiet_server import QuietServer
    from shared.logs import configure_logging

    spec = SERVICES[args.service]
    settings = spec.settings()
    missing = settings.missing_secrets()
    if missing:
        for line in missing:
            print(f"leadrelay serve {spec.name}: {line}", file=sys.stderr)
        return 2
    configure_logging(spec.name, settings.log_level, settings.log_format)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    try:
        listener = bind_listener(host, port, advice=(
            f"stop what holds it (`ss -ltnp 'sport = :{port}'` names it) or choose another "
            "port (--port, LEADRELAY_PORT)"))
        try:
            asyncio.run(check_database(settings))
            check_broker(settings)
        except BaseException:
            listener.close()
            raise
    except StartupError as error:
        print(f"leadrelay serve {spec.name}: {error}", file=sys.stderr)
        return 2

    def app() -> Any:
        return freeze_after_startup(import_from_string(spec.app_factory)())

    server = QuietServer(uvicorn.Config(
        app, factory=True, host=host, port=listener.getsockname()[1], log_config=None,
        access_log=False, timeout_graceful_shutdown=10, http=OneWriteH11Protocol,
    ))
    # The socket bound above, so a port taken between the check and the start cannot be.
    server.run(sockets=[listener])
    return 0 if server.started else 3


def _migrate(args: argparse.Namespace) -> int:
    from shared.migrations import upgrade

    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    for name in args.services or list(SERVICES):
        spec = SERVICES[name]
        settings = spec.settings()
        _run_async(check_database(settings))
        upgrade(spec.migrations_dir, settings.database_url, spec.version_table)
        print(f"{name}: database up to date")
    return 0


def _reencrypt(args: argparse.Namespace) -> int:
    from uvicorn.importer import import_from_string

    from shared.encryption import SecretBox

    unknown = sorted(set(args.services) - set(SECRET_HOLDERS))
    if unknown:
        raise SystemExit(f"no stored secrets in: {', '.join(unknown)}; "
                         f"those with some: {', '.join(SECRET_HOLDERS)}")
    for name in args.services or list(SECRET_HOLDERS):
        settings = SERVICES[name].settings()
        secrets = SecretBox.from_setting(settings.encryption_keys)
        reencrypt = import_from_string(SECRET_HOLDERS[name])
        changed = _run_async(_with_database(settings.database_url, reencrypt, secrets))
        print(f"{name}: {changed} row(s) encrypted with the newest key")
    return 0


async def _with_database(url: str, work: Any, *args: Any) -> Any:
    from shared.db import Database

    db = Database(url)
    try:
        return await work(db, *args)
    finally:
        await db.dispose()


def _broker(args: argparse.Namespace) -> int:
    check_port_free("127.0.0.1", args.port, advice=(
        "is another broker (`leadrelay broker`, `leadrelay up`) running? Stop it or choose "
        "another port (--port)"))
    broker = EmbeddedBroker(args.port)
    _stop_on_sigterm()
    try:
        broker.start()
        print(f"broker listening on {broker.bootstrap_servers} (memory storage); "
              "Ctrl-C stops it", flush=True)
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        # tansu runs in a session of its own (a Ctrl-C in the terminal reaches only us), so
        # nothing else stops it.
        broker.stop()
    return 1


def _demo(args: argparse.Namespace) -> int:
    from leadrelay.demo import run_demo

    data_dir = Path(os.environ.get("LEADRELAY_DATA_DIR", DEFAULT_DATA_DIR))
    token = os.environ.get("LEADRELAY_ADMIN_TOKEN") or _admin_token(data_dir.resolve())
    _run_async(run_demo(args.ingest_url, args.router_url, receiver_port=args.receiver_port,
                        admin_token=token))
    return 0


def _import(args: argparse.Namespace) -> int:
    from leadrelay.importer import run_import

    token = args.admin_token or os.environ.get("LEADRELAY_ADMIN_TOKEN")
    written = Path(os.environ.get("LEADRELAY_DATA_DIR", DEFAULT_DATA_DIR)) / "admin-token"
    if token is None and written.exists():
        token = written.read_text().strip()
    delimiter = "\t" if args.delimiter == "tab" else args.delimiter
    return run_import(args.file, args.source, ingest_url=args.ingest_url, admin_token=token,
                      errors_path=args.errors, encoding=args.encoding, delimiter=delimiter)


def _admin_token(data_dir: Path) -> str:
    """The embedded system's admin token (every service's): `<data dir>/admin-token`."""
    return _kept_secret(data_dir, "admin-token", lambda: secrets.token_urlsafe(32))


def _kept_secret(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """A secret kept in `<data dir>/<name>` (mode 0600), made on first use and read back on
    every later one, so tokens, keys and the links signed with them survive restarts."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = make()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value


def _local_secrets(data_dir: Path) -> dict[str, str]:
    """What `serve` refuses to start without, for a system on this machine: the environment's
    values, else the ones kept in the data directory (made the first time)."""
    from cryptography.fernet import Fernet

    made: dict[str, Callable[[], str]] = {
        "LEADRELAY_ADMIN_TOKEN": lambda: _admin_token(data_dir),
        "LEADRELAY_ENCRYPTION_KEYS": lambda: _kept_secret(
            data_dir, "encryption-key", lambda: Fernet.generate_key().decode()),
        "LEADRELAY_PUBLIC_BASE_URL": lambda: f"http://127.0.0.1:{SERVICES['router'].port}",
    }
    return {name: os.environ.get(name) or make() for name, make in made.items()}


def data_dir_of(chosen: Path | None, *, demo: bool) -> Path:
    """Where `up` keeps its databases, logs and secrets: `--data-dir`, else
    `LEADRELAY_DATA_DIR`, else `.leadrelay/`; the demo, without `--data-dir`, in that folder's
    `demo/`, which a plain `up` never reads, so the demo's reps never get real leads."""
    if chosen is not None:
        return chosen.resolve()
    found = Path(os.environ.get("LEADRELAY_DATA_DIR", DEFAULT_DATA_DIR)).resolve()
    return found / "demo" if demo else found


def clear_databases(data_dir: Path) -> None:
    """Remove the SQLite files of `data_dir` (the demo's, so each demo starts from nothing)."""
    for pattern in ("*.db", "*.db-wal", "*.db-shm"):
        for path in data_dir.glob(pattern):
            path.unlink()


def _up(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args.data_dir, demo=args.demo)
    if args.demo and args.data_dir is None:
        clear_databases(data_dir)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sla = args.sla_seconds if args.sla_seconds is not None else (20.0 if args.demo else None)
    env = {
        "LEADRELAY_DATA_DIR": str(data_dir),
        **_local_secrets(data_dir),
    }
    if args.demo:
        # The demo's receiver stands in for the reps on this machine: it alone may be called
        # although loopback is no public address.
        env["LEADRELAY_WEBHOOK_ALLOWED_URLS"] = f"http://127.0.0.1:{DEMO_RECEIVER_PORT}"
    if sla is not None:
        env["LEADRELAY_SLA_ACCEPT_SECONDS"] = str(sla)

    bootstrap = os.environ.get("LEADRELAY_KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS"
    )
    broker: EmbeddedBroker | None = None
    services: list[ServiceProcess] = []
    _stop_on_sigterm()
    try:
        if bootstrap is None:
            broker = _start_embedded_broker(logs)
            bootstrap = broker.bootstrap_servers
            env.update(embedded_consumer_env())
        env["LEADRELAY_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        os.environ.update(env)
        _check_before_up(external_broker=broker is None)
        _migrate(argparse.Namespace(services=[]))
        services = [
            ServiceProcess(spec.name, spec.port, env, logs / f"{spec.name}.log")
            for spec in SERVICES.values()
        ]
        services.append(scorer_signals_beside(services[1], SCORER_SIGNALS_PORT,
                                              logs / "scorer-signals.log"))
        for service in services:
            service.start()
        wait_until_ready(services)
        _print_banner(services, bootstrap, data_dir, broker is not None, sla)
        print(f"  admin    admin token in {data_dir / 'admin-token'} (or LEADRELAY_ADMIN_TOKEN); "
              "encryption-key beside it")
        if args.demo:
            from leadrelay.demo import run_demo

            _run_async(run_demo(
                services[0].url, services[2].url, admin_token=env["LEADRELAY_ADMIN_TOKEN"],
                receiver_port=DEMO_RECEIVER_PORT, keep_running=not args.exit_after_demo,
            ))
            if args.exit_after_demo:
                return 0
        _watch(services)
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        for service in reversed(services):
            service.stop()
        if broker is not None:
            broker.stop()
    return 0


def _check_before_up(*, external_broker: bool) -> None:
    """What `serve` checks before starting, for the three services at once: their settings,
    ports, databases and (when it is not the embedded one) the broker."""
    every = [spec.settings() for spec in SERVICES.values()]
    for spec in SERVICES.values():
        check_port_free("127.0.0.1", spec.port, advice=(
            f"{spec.name} listens there: is another `leadrelay up` or `leadrelay serve "
            f"{spec.name}` running? Stop it"))
    check_port_free("127.0.0.1", SCORER_SIGNALS_PORT, advice=(
        "the scorer's signals process listens there: is another `leadrelay up` running? "
        "Stop it"))
    for url in dict.fromkeys(settings.database_url for settings in every):
        _run_async(check_database(next(s for s in every if s.database_url == url)))
    if external_broker:
        check_broker(every[0])


def _start_embedded_broker(logs: Path) -> EmbeddedBroker:
    try:
        wait_for_port("127.0.0.1", EMBEDDED_BROKER_PORT, timeout=0.2)
    except TimeoutError:
        broker = EmbeddedBroker(EMBEDDED_BROKER_PORT, log=(logs / "broker.log").open("ab"))
        broker.start()
        return broker
    raise SystemExit(
        f"port {EMBEDDED_BROKER_PORT} is taken: is another `leadrelay up` running? "
        "Stop it, or point LEADRELAY_KAFKA_BOOTSTRAP_SERVERS at your own broker."
    )


def _print_banner(
    services: list[ServiceProcess], bootstrap: str, data_dir: Path, embedded: bool,
    sla: float | None,
) -> None:
    print("leadrelay is up")
    broker_kind = "embedded tansu, memory storage" if embedded else "external"
    print(f"  broker   {bootstrap} ({broker_kind})")
    for service in services:
        if service.service:
            print(f"  {service.name:<8} {service.url}  (runs the {service.service}'s lane of "
                  "the campaigns' signals)")
        else:
            print(f"  {service.name:<8} {service.url}  (API docs: {service.url}/docs)")
    print(f"  data     {data_dir}  (SQLite files; logs in {data_dir / 'logs'})")
    accept = f"{sla:g} s" if sla is not None else "2 min for hot leads, 15 min for warm"
    print(f"  SLA      {accept} to accept an assignment")
    print("Ctrl-C stops everything.")


def _watch(services: list[ServiceProcess]) -> None:
    while True:
        for service in services:
            if not service.alive():
                print(f"{service.name} stopped; see {service.log_path}. Stopping everything.")
                return
        time.sleep(0.5)


def _stop_on_sigterm() -> None:
    """SIGTERM stops a command as Ctrl-C does (outside an event loop; see `_run_async`)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where SIGTERM cancels `main` as Ctrl-C does, so that its clean-up
    runs to the end; then raises `KeyboardInterrupt` for the caller to stop the rest.

    Raising `KeyboardInterrupt` from a signal handler inside a running loop would land in
    whichever task was running, and leave it with an exception nobody retrieves.
    """

    async def until_terminated() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        before = signal.getsignal(signal.SIGTERM)
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, before)

    try:
        return asyncio.run(until_terminated())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


if __name__ == "__main__":
    raise SystemExit(main())
