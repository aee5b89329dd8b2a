"""What a TLS client costs the N5g-eir listener when admission refuses it, against one it admits.

Method.

* An N5g-eir server (``gateway.n5g_eir.server.N5gEirServer`` on uvloop, one ``https://``
  listener on loopback, a P-256 test certificate) runs as a process of its own, twice: with
  ``allowed_networks = ["10.0.0.0/8"]`` (``refused``: every loopback client is refused) and
  with no restriction (``admitted``).
* ``--clients`` TLS clients (default 1,000) connect one after the other from this process, each
  trying a full handshake (ALPN h2) and closing. Reported: handshakes completed, and the server
  process's CPU (user + system, from /proc) over the whole run, in all and per client.

A refused client is closed at accept, before its handshake (``diameter.transport.tls_accept``):
its cost is an accept and a close. An admitted client's is the handshake, which a refused one
cost as well before admission moved ahead of it.

Run: ``.venv/bin/python bench/tls_refusal.py [--clients N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.certs import TestCa  # noqa: E402

SERVER = """
import asyncio, sys
from gateway.n5g_eir.server import N5gEirServer
from gateway.n5g_eir.settings import HttpEndpoint, N5gEirSettings
from gateway.n5g_eir.problem import Response
class Handler:
    def handle(self, *args, **kwargs):
        return Response(200, b"application/json", b"{}")
async def main():
    server = N5gEirServer(Handler(), N5gEirSettings(
        listen=(HttpEndpoint("https", "127.0.0.1", 0),), tls_cert=sys.argv[1],
        tls_key=sys.argv[2], allowed_networks=tuple(sys.argv[3:])))
    await server.start()
    print(server.sockets[0][2], flush=True)
    await asyncio.sleep(3600)
import uvloop
uvloop.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clients(port: int, count: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    completed = 0
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            context.wrap_socket(sock).close()
            completed += 1
        except OSError:  # ssl.SSLError too: refused (reset, or closed)
            sock.close()
    return completed


def run(mode: str, cert: Path, key: Path, count: int) -> dict[str, float]:
    networks = ["10.0.0.0/8"] if mode == "refused" else []
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key), *networks],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        time.sleep(0.5)  # start-up's own CPU settled
        before = _cpu_seconds(server.pid)
        completed = _clients(port, count)
        time.sleep(0.2)  # the last close handled
        cpu = _cpu_seconds(server.pid) - before
    finally:
        server.kill()
        server.wait()
    return {"clients": count, "handshakes": completed, "server_cpu_s": round(cpu, 3),
            "server_cpu_us_per_client": round(cpu / count * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        issued = TestCa(Path(directory), "bench").issue("eir.example.net")
        results = {mode: run(mode, issued.cert, issued.key, args.clients)
                   for mode in ("admitted", "refused")}
    results["load_average"] = os.getloadavg()[0]  # type: ignore[assignment]
    if args.json:
        print(json.dumps(results))
        return
    for mode in ("admitted", "refused"):
        r = results[mode]
        print(f"{mode:9} {r['handshakes']:>6} of {r['clients']} handshakes, server CPU "
              f"{r['server_cpu_s']} s ({r['server_cpu_us_per_client']} µs a client)")
    print(f"load average {results['load_average']:.2f}")


if __name__ == "__main__":
    main()
