"""A real PostgreSQL (Debian ``postgresql``: ``initdb`` + ``postgres``) on a free loopback port in
a temporary directory, removed afterwards, for the tests of ``[state] backend = "postgresql"``.
They skip, saying why, where the server binaries or asyncpg are missing.

One server per test session (initdb takes seconds); each test gets a database of its own.
PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` user (made by
the Debian package), or ``nobody``.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:
    import asyncpg
except ImportError:  # the fixture skips
    asyncpg = None

from tests.redis_server import free_port


def _binaries() -> tuple[str, str] | None:
    for directory in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=directory)
        server = shutil.which("postgres", path=directory)
        if initdb and server:
            return initdb, server
    return None


def _owner() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class PostgresServer:
    """A throwaway cluster: trust authentication on 127.0.0.1 only, no Unix socket, no fsync."""

    def __init__(
        self, initdb: str, binary: str, directory: Path, settings: dict[str, str] | None = None
    ) -> None:
        self.initdb = initdb
        self.binary = binary
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._owner = _owner()
        self._names = itertools.count(1)
        self.settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                         "max_connections": "200", "shared_buffers": "32MB", **(settings or {})}

    def _as_owner(self) -> Callable[[], None] | None:
        owner = self._owner
        if owner is None:
            return None

        def demote() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

        return demote

    def start(self) -> None:
        if self._owner is not None:
            os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        subprocess.run(
            [self.initdb, "-D", str(self.data), "-U", "eir", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=self._as_owner(),
        )
        self._run()

    def restart(self) -> None:
        """A fast shutdown (clients disconnected, as when PostgreSQL restarts under a running
        gateway), then the same cluster on the same port."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # fast: a smart shutdown waits for clients
        self.process.wait(30)
        self._run()

    def _run(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", "", *(f"-c{k}={v}" for k, v in self.settings.items())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self._as_owner(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            probe = subprocess.run(
                [str(Path(self.binary).resolve().with_name("pg_isready")), "-h", "127.0.0.1", "-p",
                 str(self.port), "-q"], check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"postgres did not start on port {self.port}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://eir@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        name = f"test_{next(self._names)}"

        async def create() -> None:
            conn = await asyncpg.connect(self.dsn())
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        return self.dsn(name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = _binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
    if asyncpg is None:
        pytest.skip("asyncpg is not installed (the 'postgresql' extra)")
    # Not under pytest's tmp_path: its parents are private to root, the cluster's user must
    # reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="eir-pg-"))
    server = PostgresServer(*binaries, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A fresh database of the session's server."""
    return postgres_server.create_database()
