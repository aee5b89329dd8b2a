"""A real redis-server (Debian ``redis-server``) on a free loopback port, for the tests that
share state through Redis; they skip, saying why, where the binary or redis-py is missing."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``start()`` / ``stop()`` on one port, so that a test can take Redis away and back."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.extra: list[str] = []  # more redis-server options
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # A free port is only free when it was looked at: another test's connection may take
        # it (or a cluster node's bus port) before redis-server binds it, and redis-server then
        # exits. A first start tries fresh ports; a restart keeps its port (the test's URL).
        for _ in range(3 if not self._started else 1):
            if self._run():
                self._started = True
                return
            if self._started:
                break
            self.port = free_port()
            if "--cluster-port" in self.extra:
                self.extra[self.extra.index("--cluster-port") + 1] = str(free_port())
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def _run(self) -> bool:
        """redis-server started on ``port``: whether it answers there within 10 s."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "yes",
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    if importlib.util.find_spec("redis") is None:
        pytest.skip("redis-py is not installed (the 'shared' extra)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    server.start()
    yield server
    server.stop()


class RedisCluster:
    """A Redis Cluster of ``masters`` redis-servers and ``replicas`` replicas of each on free
    loopback ports, its 16,384 slots spread by ``redis-cli --cluster create``. A node not
    heard from for ``node_timeout`` ms is failed, and its replica promoted."""

    def __init__(self, binary: str, cli: str, directory: Path, masters: int = 3,
                 replicas: int = 0, node_timeout: int = 5000) -> None:
        self.cli = cli
        self.replicas = replicas
        self.nodes = [RedisServer(binary, directory / f"node{n}")
                      for n in range(masters * (1 + replicas))]
        for node in self.nodes:
            node.directory.mkdir()
            # The cluster bus on a port of its own (Redis 7 cluster-port), free like the first.
            node.extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-port", str(free_port()), "--cluster-node-timeout",
                          str(node_timeout)]

    def command(self, port: int, *args: str) -> str:
        """``redis-cli -p PORT ARGS...``: its output."""
        return subprocess.run([self.cli, "-p", str(port), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [self.cli, "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
        # Every node must know every slot's owner before a client's first CLUSTER SLOTS.
        deadline = time.monotonic() + 30
        for node in self.nodes:
            while b"cluster_state:ok" not in subprocess.run(
                [self.cli, "-p", str(node.port), "cluster", "info"],
                check=True, capture_output=True, timeout=10,
            ).stdout:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Redis Cluster node {node.port} never reached state ok")
                time.sleep(0.05)
        # A replica that never synchronised is not eligible to take over its master's slots.
        for node in self.nodes:
            while "role:slave" in (info := self.command(node.port, "info", "replication")) \
                    and "master_link_status:up" not in info:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Redis Cluster replica {node.port} never synchronised")
                time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def running_cluster(directory: Path, **options: int) -> Iterator[RedisCluster]:
    """A started :class:`RedisCluster` (``options`` as its own), stopped afterwards; the test
    skips, saying why, where redis-server, redis-cli or redis-py is missing."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.skip("redis-server or redis-cli is not installed (Debian packages redis-server, "
                    "redis-tools; .ci/run installs them)")
    if importlib.util.find_spec("redis") is None:
        pytest.skip("redis-py is not installed (the 'shared' extra)")
    cluster = RedisCluster(binary, cli, directory, **options)
    try:
        cluster.start()  # a node that fails to start leaves the others to stop
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    yield from running_cluster(tmp_path)
