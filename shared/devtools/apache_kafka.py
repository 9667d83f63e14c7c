"""Apache Kafka (KRaft, no ZooKeeper) on loopback ports, from its Maven Central jars.

For the tests and for a person (``rapport kafka``): no Docker and no release tarball.
Maven resolves ``org.apache.kafka:kafka_2.13`` with a log4j2 backend for the SLF4J 1.7
API that Kafka logs through (the slf4j2 binding would leave the broker silent) into the
local Maven repository once; the classpath is kept in ``~/.cache/rapport/kafka-<version>``
(``RAPPORT_KAFKA_CACHE`` moves it). Each node is one JVM, broker and controller together,
with a small heap. A cluster of three has replication factor 3 and
``min.insync.replicas`` 2 by default, as production should.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.infra.broker import die_with_parent, free_port, wait_for_port

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.26.1"
HEAP = "-Xmx384m"  # a node's heap: the machine has 2 cores and 24 GiB, tests run 1 to 3
POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>rapport</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""
# Warnings and errors, and the one line that says a node is up.
LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def cache_dir() -> Path:
    base = os.environ.get("RAPPORT_KAFKA_CACHE") or Path.home() / ".cache" / "rapport"
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def classpath() -> str:
    """The pinned Kafka's classpath; resolved by Maven on first use, then cached."""
    cache = cache_dir()
    done = cache / "classpath.txt"
    if done.exists() and all(Path(j).exists() for j in done.read_text().split(":")):
        return done.read_text().strip()
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch Apache Kafka: apt-get install maven")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "pom.xml").write_text(POM)
    (cache / "log4j2.yaml").write_text(LOG4J2)
    partial = cache / f"classpath.{os.getpid()}.txt"
    print(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central (once)...", flush=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(cache / "pom.xml"),
         "dependency:build-classpath", f"-Dmdep.outputFile={partial}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.replace(partial, done)  # whole or not at all, whoever resolves at the same time
    return done.read_text().strip()


def broker_settings(replicas: int) -> dict[str, str]:
    """What every node is set to, beyond its addresses: the settings the tests prove, and
    docker-compose.yml's (``tests/integration/test_compose.py`` checks they agree)."""
    isr = str(min(2, replicas))
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        # A dead node's partitions get new leaders in about 3 s (default: 9 s).
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "auto.create.topics.enable": "false",
    }


@dataclass
class Node:
    id: int
    port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "node.log"


class KafkaCluster:
    """``size`` KRaft nodes (1 or 3) on free loopback ports; a context manager that
    stops every JVM it started, even when the block fails."""

    def __init__(self, size: int = 1, directory: Path | None = None) -> None:
        self.size = size
        self._throwaway = directory is None  # removed again at stop
        self.directory = directory or Path(tempfile.mkdtemp(prefix="rapport-kafka-"))
        self.nodes = [
            Node(i, free_port(), free_port(), self.directory / f"node-{i}")
            for i in range(1, size + 1)
        ]
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._classpath = ""

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = min(3, self.size)
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node.id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={node.directory / 'data'}",
            *(f"{key}={value}" for key, value in broker_settings(replicas).items()),
            "",
        ])  # fmt: skip

    def _java(self, *args: str) -> list[str]:
        config = cache_dir() / "log4j2.yaml"
        return ["java", HEAP, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={config}", "-cp", self._classpath, *args]  # fmt: skip

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Format every node's storage, start them all, and wait until each is a broker
        in the cluster's metadata."""
        self._classpath = classpath()
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            (node.directory / "server.properties").write_text(self._properties(node))
        if self.size == 1:
            # A fresh single node's storage is the same for every such cluster: formatted
            # once and copied, a JVM start less per test.
            shutil.copytree(self._formatted_single_node(), self.nodes[0].directory / "data")
        else:
            self._format(self.nodes)
        try:
            for node in self.nodes:
                self.start_node(node.id)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _format(self, nodes: list[Node]) -> None:
        formats = [
            subprocess.Popen(
                # "=": a cluster id may start with "-", which would read as an option.
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
                           f"--config={node.directory / 'server.properties'}"),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            for node in nodes
        ]  # fmt: skip
        for node, proc in zip(nodes, formats, strict=True):
            output, _ = proc.communicate(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"formatting node {node.id} failed: {output.decode()}")

    def _formatted_single_node(self) -> Path:
        template = cache_dir() / "formatted-node" / "data"
        if not template.exists():
            work = Path(tempfile.mkdtemp(prefix="format-", dir=cache_dir()))
            node = Node(1, 0, 0, work)
            (work / "server.properties").write_text(self._properties(node))
            self._format([node])
            with contextlib.suppress(OSError):  # another process was first: use its copy
                os.rename(work, template.parent)
            shutil.rmtree(work, ignore_errors=True)
        return template

    def start_node(self, node_id: int) -> None:
        """Start (or start again) one node's JVM."""
        node = self.nodes[node_id - 1]
        with node.log.open("ab") as out:
            node.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(node.directory / "server.properties")),
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            )  # fmt: skip

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crashed machine would go."""
        proc = self.nodes[node_id - 1].proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until every node listens and is a broker in the metadata."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            wait_for_port(node.port, timeout=max(1.0, deadline - time.monotonic()))
        while asyncio.run(self._brokers()) < self.size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every node of {self.bootstrap_servers} came up")
            time.sleep(0.2)

    async def _brokers(self) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return len(cluster["brokers"])
        except KafkaError:
            return 0
        finally:
            await admin.close()

    def stop(self) -> None:
        """Stop every node: SIGTERM, then SIGKILL after 2 s (nodes that all stop at once
        can wait long for a quorum to hand over to; the data is thrown away anyway)."""
        running = [n.proc for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + 2
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._throwaway:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
