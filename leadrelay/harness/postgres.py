"""A throwaway PostgreSQL cluster for tests and benchmarks that stop and restart the database.

`PostgresCluster` runs Debian's installed server binaries (`/usr/lib/postgresql/<version>/bin`,
the newest; `LEADRELAY_POSTGRES_BIN` names another directory): `initdb` into a fresh temporary
directory, trust authentication, listening on 127.0.0.1 on a free port. As root the server
runs as the `postgres` user (`runuser -u postgres --`), since PostgreSQL refuses root.

    with PostgresCluster() as cluster:          # initdb + start; stop and delete on exit
        url = cluster.create_database("ingest")  # postgresql+asyncpg://... for a service
        cluster.restart()                       # pg_ctl restart -m immediate: a crash
        cluster.stop_for(3.0)                   # down for 3 s, then started again
        cluster.start(wait=False)               # or return at once, then wait_until_ready()

Every method blocks until `pg_ctl` is done (start and restart wait until the server accepts
connections); from async code call them through `asyncio.to_thread`, so the event loop keeps
serving while the database goes down and comes back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from leadrelay.broker import free_port

StopMode = Literal["smart", "fast", "immediate"]
"""`pg_ctl -m`: wait for clients, disconnect them cleanly, or kill everything (a crash:
the next start replays the WAL)."""

SERVER_USER = "postgres"


class PostgresNotFoundError(RuntimeError):
    pass


def server_binaries() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `createdb`."""
    override = os.environ.get("LEADRELAY_POSTGRES_BIN")
    if override:
        directory = Path(override)
    else:
        installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                           key=lambda path: int(path.parent.name) if path.parent.name.isdigit()
                           else 0)
        if not installed:
            raise PostgresNotFoundError(
                "no PostgreSQL server in /usr/lib/postgresql: install Debian's postgresql "
                "package or set LEADRELAY_POSTGRES_BIN")
        directory = installed[-1]
    if not (directory / "pg_ctl").is_file():
        raise PostgresNotFoundError(f"no pg_ctl in {directory}")
    return directory


class PostgresCluster:
    """One PostgreSQL server on 127.0.0.1:`port` with its data in a temporary directory.

    `settings` are written to the cluster's configuration (e.g. `{"fsync": "off"}`), so they
    hold across restarts. The cluster and its directory are deleted by `close()`, which the
    context manager calls."""

    def __init__(
        self, *, port: int | None = None, settings: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.binaries = server_binaries()
        self.directory: Path | None = None

    @property
    def dsn(self) -> str:
        """libpq/asyncpg DSN of the `postgres` database, as the `postgres` superuser."""
        return self.dsn_of("postgres")

    def dsn_of(self, database: str) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def url_of(self, database: str) -> str:
        """SQLAlchemy URL of `database` with the asyncpg driver (what the services take)."""
        return self.dsn_of(database).replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def data_directory(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the cluster is not initialised: call start() first")
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (`pg_ctl -l`), kept until `close()`."""
        return self.data_directory.parent / "server.log"

    def initialise(self) -> None:
        """`initdb` into a new temporary directory; `start()` does it when not done yet."""
        self.directory = Path(tempfile.mkdtemp(prefix="leadrelay-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
        self._run("initdb", "--auth=trust", f"--username={SERVER_USER}", "--no-sync",
                  "--encoding=UTF8", "--locale=C", "-D", str(self.data_directory))
        configuration = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            **{name: f"'{value}'" for name, value in self.settings.items()},
        }
        with (self.data_directory / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in configuration.items())

    def start(self, *, wait: bool = True) -> None:
        """Start the server; with `wait`, return once it accepts connections, else at once
        (while it is starting up, or replaying its WAL after a crash)."""
        if self.directory is None:
            self.initialise()
        self._pg_ctl("start", "-l", str(self.log_file), wait=wait)

    def stop(self, mode: StopMode = "fast", *, wait: bool = True) -> None:
        """Stop the server; `immediate` kills it as a crash would. Without `wait`, return at
        once: a `smart` stop then lasts until the last client disconnects."""
        self._pg_ctl("stop", "-m", mode, wait=wait)

    def restart(self, mode: StopMode = "immediate") -> None:
        """Stop (by default as a crash) and start again; returns once it accepts connections."""
        self._pg_ctl("restart", "-m", mode, "-l", str(self.log_file))

    def stop_for(self, seconds: float, mode: StopMode = "fast") -> None:
        """Stop the server, leave it down for `seconds`, start it again."""
        self.stop(mode)
        time.sleep(seconds)
        self.start()

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Return once the server accepts connections (`pg_isready`): after `start(wait=False)`,
        or after a backend's crash made it reinitialise."""
        deadline = time.monotonic() + timeout
        while subprocess.run(
            [str(self.binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} not ready after {timeout} s")
            time.sleep(0.05)

    def is_running(self) -> bool:
        if self.directory is None:
            return False
        status = self._pg_ctl("status", check=False)
        return status.returncode == 0

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data_directory / "postmaster.pid").read_text().split()[0])

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its SQLAlchemy URL."""
        subprocess.run(
            [str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", SERVER_USER, name],
            check=True, capture_output=True)
        return self.url_of(name)

    def close(self) -> None:
        """Stop the server at once and delete its directory."""
        if self.directory is None:
            return
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _pg_ctl(self, *arguments: str, check: bool = True,
                wait: bool = True) -> subprocess.CompletedProcess[str]:
        waiting = ("-w", "-t", "60") if wait else ("-W",)
        return self._run("pg_ctl", *arguments, "-D", str(self.data_directory), *waiting,
                         check=check)

    def _run(self, program: str, *arguments: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        finished = subprocess.run(command, capture_output=True, text=True, check=False,
                                  stdin=subprocess.DEVNULL)
        if check and finished.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(arguments)} failed ({finished.returncode}): "
                f"{finished.stderr.strip() or finished.stdout.strip()}")
        return finished
