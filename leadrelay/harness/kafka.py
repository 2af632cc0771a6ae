"""Apache Kafka for the tests and the benchmarks: jars from Maven Central, brokers in KRaft mode.

The jars come from Maven Central once (`leadrelay.harness.kafka_jars`). `KafkaCluster` starts
one broker or several on free ports with the machine's `java`, each a combined broker and
controller: storage formatted first, then `kafka.Kafka server.properties`. It waits until every
broker is registered and serves metadata, can kill -9 a broker and start it again, and tells
which broker leads the most partitions. `python -m leadrelay.harness.kafka fetch` pre-fetches
the jars (CI does); `run --brokers 3` runs a cluster until interrupted.

Each broker has two listeners: `CLIENT`, with the security protocol the cluster was asked for
(PLAINTEXT, or SASL_SSL with SCRAM and PLAIN users and a PEM certificate), and `INTERNAL`, plain
text, used between the brokers and by the harness itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka.admin import AIOKafkaAdminClient

from leadrelay.broker import free_port, wait_for_port
from leadrelay.harness.kafka_jars import KAFKA_VERSION, KafkaUnavailableError, fetch

JVM_OPTIONS = "-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto"
"""Small heap, one GC thread and the quick compiler: brokers start sooner and leave the CPU to
the services on a small machine. `LEADRELAY_KAFKA_JVM_OPTIONS` replaces them."""
START_TIMEOUT = 90.0
STOP_GRACE_SECONDS = 3.0
"""A combined node that lost its quorum (its peers stopped first) never finishes a controlled
shutdown: after this it is killed."""

T = TypeVar("T")


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL client listener: SCRAM-SHA-256/512 and PLAIN users, a PEM key and chain."""

    users: Mapping[str, str]
    """User name -> password, for every mechanism."""
    certificate_chain: Path
    private_key: Path
    """Unencrypted PKCS#8 PEM."""


@dataclass
class KafkaBroker:
    """One combined broker and controller process of a cluster."""

    node_id: int
    port: int
    internal_port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def internal_address(self) -> str:
        return f"127.0.0.1:{self.internal_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def properties_path(self) -> Path:
        return self.directory / "server.properties"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """`size` brokers on free ports; a context manager that stops them and deletes their data.

    Topics created by the harness's brokers default to the largest sensible replication: the
    internal topics get `min(size, 3)` replicas and `min.insync.replicas` `min(size, 2)`.
    """

    size: int = 1
    security: BrokerSecurity | None = None
    home: Path | None = None
    brokers: list[KafkaBroker] = field(default_factory=list)
    directory: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The client listeners, with the cluster's security protocol."""
        return ",".join(broker.address for broker in self.brokers)

    @property
    def internal_bootstrap_servers(self) -> str:
        """The plain-text listeners, whatever the client listeners' security."""
        return ",".join(broker.internal_address for broker in self.brokers)

    @property
    def security_protocol(self) -> str:
        return "SASL_SSL" if self.security else "PLAINTEXT"

    def broker(self, node_id: int) -> KafkaBroker:
        return next(broker for broker in self.brokers if broker.node_id == node_id)

    def start(self) -> None:
        home = fetch(self.home)
        self.home = home
        if shutil.which("java") is None:
            raise KafkaUnavailableError("java is not on PATH: cannot start Apache Kafka")
        self.directory = Path(tempfile.mkdtemp(prefix="leadrelay-kafka-"))
        self.brokers = [
            KafkaBroker(node_id, free_port(), free_port(), free_port(),
                        self.directory / f"broker-{node_id}")
            for node_id in range(1, self.size + 1)
        ]
        cluster_id = _cluster_id()
        try:
            for broker in self.brokers:
                broker.directory.mkdir(parents=True)
                broker.properties_path.write_text(self._properties(broker))
            with concurrent.futures.ThreadPoolExecutor(self.size) as pool:
                list(pool.map(lambda broker: self._format(broker, cluster_id), self.brokers))
            for broker in self.brokers:
                self._launch(broker)
            self.wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _properties(self, broker: KafkaBroker) -> str:
        replicas, min_isr = min(self.size, 3), min(self.size, 2)
        voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in self.brokers)
        settings: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(broker.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"CLIENT://127.0.0.1:{broker.port},"
                         f"INTERNAL://127.0.0.1:{broker.internal_port},"
                         f"CONTROLLER://127.0.0.1:{broker.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{broker.port},"
                                    f"INTERNAL://127.0.0.1:{broker.internal_port}",
            "listener.security.protocol.map": f"CLIENT:{self.security_protocol},"
                                              "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(broker.directory / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.security:
            settings.update(_sasl_ssl_settings(self.security))
        return "".join(f"{key}={_escape(value)}\n" for key, value in settings.items())

    def _format(self, broker: KafkaBroker, cluster_id: str) -> None:
        command = [*self._java(broker), "kafka.tools.StorageTool", "format", "--ignore-formatted",
                   "-t", cluster_id, "-c", str(broker.properties_path)]
        for user, password in (self.security.users.items() if self.security else ()):
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                command += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"formatting broker {broker.node_id}'s storage failed:\n"
                               f"{finished.stdout}{finished.stderr}")

    def _java(self, broker: KafkaBroker) -> list[str]:
        assert self.home is not None
        options = os.environ.get("LEADRELAY_KAFKA_JVM_OPTIONS", JVM_OPTIONS).split()
        return ["java", *options, "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                f"-Dleadrelay.kafka.log={broker.log_path}",
                "-cp", str(self.home / "libs" / "*")]

    def _launch(self, broker: KafkaBroker) -> None:
        with (broker.directory / "stdout.log").open("ab") as output:
            broker.process = subprocess.Popen(
                [*self._java(broker), "kafka.Kafka", str(broker.properties_path)],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_until_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every broker is registered and the cluster answers metadata requests."""
        deadline = time.monotonic() + timeout
        wanted = {broker.node_id for broker in self.brokers}
        registered: set[int] = set()
        while time.monotonic() < deadline:
            for broker in self.brokers:
                if not broker.alive():
                    raise RuntimeError(f"Kafka broker {broker.node_id} exited during start-up; "
                                       f"see {broker.log_path}")
            registered = _run(self._registered_brokers()) if self._listening() else set()
            if registered == wanted:
                return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka brokers {sorted(wanted - registered)} not registered after "
                           f"{timeout:.0f} s; see {self.directory}")

    def _listening(self) -> bool:
        """Whether every live broker accepts connections (asked before any Kafka client is)."""
        try:
            for broker in self.brokers:
                if broker.alive():
                    wait_for_port("127.0.0.1", broker.internal_port, timeout=0.05)
        except TimeoutError:
            return False
        return True

    async def _registered_brokers(self) -> set[int]:
        alive = ",".join(b.internal_address for b in self.brokers if b.alive())
        admin = AIOKafkaAdminClient(bootstrap_servers=alive, request_timeout_ms=3_000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        except Exception:  # noqa: BLE001 - not serving yet is what the caller waits out
            return set()
        finally:
            await admin.close()
        return {int(broker["node_id"]) for broker in cluster["brokers"]}

    def kill(self, node_id: int) -> None:
        """kill -9 one broker (its data stays for `restart`)."""
        broker = self.broker(node_id)
        if broker.process is not None:
            broker.process.kill()
            broker.process.wait()
            broker.process = None

    def restart(self, node_id: int) -> None:
        """Start a killed or stopped broker again and wait until every broker is back."""
        broker = self.broker(node_id)
        if not broker.alive():
            self._launch(broker)
        self.wait_until_serving()

    def service_env(self) -> dict[str, str]:
        """The broker settings of a service using this cluster (its plain-text listeners) as
        production would: idempotent producers, `min(size, 3)` replicas with `min(size, 2)` in
        sync, and Kafka's own fetch wait (it answers a waiting fetch as soon as data arrives,
        so the embedded broker's 10-ms polling is not wanted)."""
        if self.security is not None:
            raise ValueError("a SASL_SSL cluster's clients need its credentials as well")
        return {
            "LEADRELAY_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "LEADRELAY_KAFKA_ENABLE_IDEMPOTENCE": "true",
            "LEADRELAY_KAFKA_REPLICATION_FACTOR": str(min(self.size, 3)),
            "LEADRELAY_KAFKA_MIN_INSYNC_REPLICAS": str(min(self.size, 2)),
            "LEADRELAY_KAFKA_FETCH_MAX_WAIT_MS": "500",
        }

    def busiest_leader(self, topics: Sequence[str] | None = None) -> int:
        """The node id leading the most partitions (of `topics`, default every topic)."""
        leaders = _run(self._partition_leaders(topics))
        if not leaders:
            raise LookupError("no partition has a leader")
        return Counter(leaders.values()).most_common(1)[0][0]

    async def _partition_leaders(
        self, topics: Sequence[str] | None
    ) -> dict[tuple[str, int], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.internal_bootstrap_servers,
                                    request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics) if topics else None)
        finally:
            await admin.close()
        return {
            (topic["topic"], partition["partition"]): partition["leader"]
            for topic in described if not topic["topic"].startswith("__")
            for partition in topic["partitions"] if partition["leader"] >= 0
        }

    def stop(self) -> None:
        """SIGTERM every broker, SIGKILL those still up after a few seconds; delete the data."""
        for broker in self.brokers:
            if broker.alive():
                assert broker.process is not None
                broker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for broker in self.brokers:
            if broker.process is None:
                continue
            try:
                broker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                broker.process.kill()
                broker.process.wait()
            broker.process = None
        if self.directory is not None and not os.environ.get("LEADRELAY_KAFKA_KEEP_DATA"):
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _sasl_ssl_settings(security: BrokerSecurity) -> dict[str, str]:
    plain_users = " ".join(f'user_{user}="{password}"' for user, password in security.users.items())
    prefix = "listener.name.client"
    return {
        f"{prefix}.sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        f"{prefix}.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{prefix}.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{prefix}.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.certificate.chain": security.certificate_chain.read_text(),
        f"{prefix}.ssl.keystore.key": security.private_key.read_text(),
    }


def _escape(value: str) -> str:
    """A value as a Java properties file reads it back (PEM blocks keep their line breaks)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _cluster_id() -> str:
    """A random 16-byte id in Kafka's URL-safe base64 form (22 characters), never starting with
    `-`: the storage tool would read it as an option (one start in 64 failed that way)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a loop of its own, also when the caller's thread runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadrelay.harness.kafka", description=(
        f"Apache Kafka {KAFKA_VERSION} for the tests and benchmarks."))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="resolve the broker's jars with Maven (once)")
    run = commands.add_parser("run", help="run a cluster on free ports until interrupted")
    run.add_argument("--brokers", type=int, default=1)
    arguments = parser.parse_args(argv)
    if arguments.command == "fetch":
        started = time.monotonic()
        try:
            home = fetch()
        except KafkaUnavailableError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"Apache Kafka {KAFKA_VERSION} jars in {home / 'libs'} "
              f"({time.monotonic() - started:.1f} s)")
        return 0
    with KafkaCluster(arguments.brokers) as cluster:
        print(f"Apache Kafka {KAFKA_VERSION}: {cluster.bootstrap_servers}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
