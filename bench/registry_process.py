"""The reference registry in a child process, for the registry benchmarks (registry.py,
registry_faults.py): server and client then share neither an event loop nor a core.

The child serves ``registry_client.server`` (SQLite seeded with
``config/registry-declarations.json``) on 127.0.0.1, port chosen by the kernel, with a fault
injector (``registry_client.faults``, healthy until told otherwise) and answers commands sent
over a pipe:

- ``("mode", fault)``: switch the fault mode; answers the time of the switch
  (``time.monotonic()``, shared by both processes on one host);
- ``("stats", since)``: the arrival times of the requests since ``since`` and the most served
  at once since the last ``stats``;
- ``("counts", None)``: requests served per path;
- ``("stop", None)``: stop the server and end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from registry_client.faults import FaultInjector
from registry_client.local import LocalRegistry
from registry_client.server import RegistryServer

SEED = Path(__file__).resolve().parents[1] / "config" / "registry-declarations.json"
TOKEN = "bench-token"


def _serve(conn: Connection, database: str) -> None:
    """Child process: the reference registry with a fault injector, driven over the pipe."""

    async def main() -> None:
        registry = LocalRegistry.open(database, [SEED])
        faults = FaultInjector()
        faults.delay, faults.flap_period = 0.5, 0.5  # SLOW: past a 50 ms budget
        server = RegistryServer(registry, tokens=[TOKEN], faults=faults)
        await server.start()
        conn.send(server.port)
        loop = asyncio.get_running_loop()
        while True:
            command, argument = await loop.run_in_executor(None, conn.recv)
            if command == "mode":
                faults.set_mode(argument)
                conn.send(time.monotonic())
            elif command == "stats":
                conn.send(([t for t in faults.arrivals if t >= argument], faults.max_concurrent))
                faults.max_concurrent = faults.concurrent
            elif command == "counts":
                conn.send(dict(server.request_counts))
            else:
                break
        await server.stop()
        registry.close_sync()

    asyncio.run(main())


class RegistryProcess:
    """``with RegistryProcess() as registry:`` the child runs, ``registry.port`` serves it."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._tmp = tempfile.TemporaryDirectory()
        self._process = context.Process(target=_serve, args=(child, f"{self._tmp.name}/r.sqlite"))
        self.port = 0

    def __enter__(self) -> RegistryProcess:
        self._process.start()
        if not self._parent.poll(30):
            self.__exit__(None, None, None)
            raise RuntimeError("reference server did not start")
        self.port = self._parent.recv()
        return self

    def call(self, command: str, argument: Any = None) -> Any:
        self._parent.send((command, argument))
        return self._parent.recv()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process.is_alive():
            self._parent.send(("stop", None))
            self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
        self._tmp.cleanup()
