"""Apache Kafka's broker jars from Maven Central, resolved once into a cache directory.

`fetch()` resolves `org.apache.kafka:kafka_2.13` and its runtime dependencies, plus log4j2 so a
broker's log goes to a file, with `mvn dependency:copy-dependencies` into `LEADRELAY_KAFKA_HOME`
(default `~/.cache/leadrelay/kafka-<version>`); `leadrelay.harness.kafka` starts brokers from
them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KAFKA_VERSION = "4.1.1"
"""Runs on Java 17; the `apache/kafka` image of docker-compose.yml has the same version."""
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"
"""kafka_2.13 asks for slf4j 1.7, which finds no log4j2 binding: the broker would log nothing."""
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
class KafkaUnavailableError(RuntimeError):
    """Java or Maven is missing, or the jars cannot be fetched."""


def kafka_home() -> Path:
    override = os.environ.get("LEADRELAY_KAFKA_HOME")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "leadrelay" / f"kafka-{KAFKA_VERSION}"


def missing_tools() -> list[str]:
    """The programs this harness needs that are not on PATH (`mvn` only until the jars are in)."""
    needed = ["java"] if _fetched(kafka_home()) else ["java", "mvn"]
    return [tool for tool in needed if shutil.which(tool) is None]


def _fetched(home: Path) -> bool:
    return (home / "libs" / ".complete").exists()


POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>leadrelay</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

LOG4J2_PROPERTIES = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:leadrelay.kafka.log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""


def fetch(home: Path | None = None) -> Path:
    """Resolve the broker's jars into `home`/libs once; later calls return at once."""
    home = home or kafka_home()
    libs = home / "libs"
    if _fetched(home):
        return home
    if shutil.which("mvn") is None:
        raise KafkaUnavailableError("Maven (mvn) is not on PATH: cannot fetch Apache Kafka's jars")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    (home / "pom.xml").write_text(POM.format(
        kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION,
        plugin=DEPENDENCY_PLUGIN_VERSION))
    finished = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(home / "pom.xml"),
         f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}"
         ":copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if finished.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaUnavailableError(
            f"mvn could not fetch kafka_2.13 {KAFKA_VERSION}:\n{finished.stdout}{finished.stderr}")
    (staging / ".complete").write_text(KAFKA_VERSION)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
    return home
