"""Hostile clients of the HTTP interfaces against a live gateway: N5g-eir connection floods and
slow provisioning API heads (slowloris), beside a well-behaved client of each.

Method.

* The gateway runs as a process (``python -m gateway.cli run``, embedded default configuration,
  ports, state directory, ``n5g_eir.max_connections`` (``--max-connections``, default 64) and
  ``api.header_timeout_seconds`` (``--head-timeout``, default 5) overridden, one API token) on
  loopback.
* ``n5g``: a well-behaved AMF (httpx, HTTP/2 with prior knowledge, its connection opened first)
  sends one GetEquipmentStatus every 100 ms and records each answer's latency. Meanwhile
  ``--flood`` connections (default 500) are opened as fast as the gateway accepts them, each
  sending the client preface and SETTINGS and then holding the connection without a request;
  each is then read for up to 5 s: told GOAWAY (refused past the limit), or served (its SETTINGS
  answered, no GOAWAY), or closed without a word. They are held ``--seconds`` (default 10), then
  closed. Reported: admitted and refused counts, ``http_connections_refused_total``, the open
  connections gauge after the flood (back to the AMF's one), the AMF's latencies and failures,
  the gateway's RSS growth.
* ``api``: ``--slow`` connections (default 200) each send a request head a byte a second, never
  finishing it, for at most ``--seconds`` + the timeout + 5 s; meanwhile a well-behaved client
  GETs ``/openapi.json`` every 200 ms (a new connection each time) and records each latency.
  Reported: how many slow connections the gateway closed, unanswered, and when (seconds after
  they opened: the timeout plus at most the sweep's second), the client's latencies and
  failures, the RSS growth.

Targets: the AMF and the API client answered every time (no failure) while abused; every flood
connection past the limit refused with GOAWAY, the rest served, and the gauge back to 1 after;
every slow head closed within the timeout plus 2 s.

Run: ``.venv/bin/python bench/hostile_http.py [--probes n5g,api] [--flood N] [--slow N]
[--seconds S] [--max-connections M] [--head-timeout T] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from e2e import free_port  # noqa: E402
from hostile import _percentile, _rss_mib, scrape, start_gateway  # noqa: E402

from gateway.n5g_eir.frames import PREFACE, FrameType, settings_frame  # noqa: E402

QUERY = "/n5g-eir-eic/v1/equipment-status?pei=imei-352099001234560"
TOKEN = "bench-secret-0123456789"


class Client(threading.Thread):
    """One request every ``interval`` until stopped: latencies and failures."""

    def __init__(self, url: str, interval: float, http2: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.interval, self.http2 = url, interval, http2
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop_flag = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        client = httpx.Client(http1=not self.http2, http2=self.http2, timeout=5.0)
        try:
            while not self.stop_flag.is_set():
                sent = time.perf_counter()
                try:
                    response = client.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"status {response.status_code}")
                    else:
                        self.latencies.append(time.perf_counter() - sent)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.ready.set()
                if not self.http2:  # the API client: a new connection each time
                    client.close()
                    client = httpx.Client(timeout=5.0)
                self.stop_flag.wait(max(0.0, self.interval - (time.perf_counter() - sent)))
        finally:
            client.close()

    def figures(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {"answered": len(ms), "failures": len(self.failures),
                "first_failures": self.failures[:3],
                "p50_ms": round(_percentile(ms, 0.5), 2), "p99_ms": round(_percentile(ms, 0.99), 2),
                "max_ms": round(max(ms), 2) if ms else None}


def _outcome(sock: socket.socket, wait: float) -> str:
    """goaway, served (SETTINGS without GOAWAY) or closed (nothing), read for ``wait`` s."""
    sock.settimeout(wait)
    data = b""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            pos = 0
            while pos + 9 <= len(data):
                length = int.from_bytes(data[pos:pos + 3], "big")
                if data[pos + 3] == FrameType.GOAWAY:
                    return "goaway"
                pos += 9 + length
            if data and data[3] == FrameType.SETTINGS and len(data) >= 9:
                return "served"
    except (TimeoutError, OSError):
        pass
    return "served" if data else "closed"


def n5g_probe(args: argparse.Namespace, state: str) -> dict[str, Any]:
    n5g = free_port()
    gateway, _, metrics, log = start_gateway(
        state, EIR_N5G_EIR_LISTEN=f"http://127.0.0.1:{n5g}",
        EIR_N5G_EIR_MAX_CONNECTIONS=str(args.max_connections), EIR_API_LISTEN="")
    try:
        amf = Client(f"http://127.0.0.1:{n5g}{QUERY}", 0.1, http2=True)
        amf.start()
        amf.ready.wait(10)
        rss_before = _rss_mib(gateway.pid)
        held: list[socket.socket] = []
        outcomes: dict[str, int] = {"goaway": 0, "served": 0, "closed": 0}
        started = time.monotonic()
        for _ in range(args.flood):
            sock = socket.create_connection(("127.0.0.1", n5g), timeout=5)
            sock.sendall(PREFACE + settings_frame({}))
            held.append(sock)
        for sock in held:
            outcomes[_outcome(sock, 5.0)] += 1
        opened_in = time.monotonic() - started
        time.sleep(max(0.0, args.seconds - opened_in))
        during = scrape(metrics)
        for sock in held:
            sock.close()
        time.sleep(2.0)
        after = scrape(metrics)
        amf.stop_flag.set()
        amf.join(10)
        return {
            "flood": args.flood, "max_connections": args.max_connections,
            "outcomes": outcomes,
            "refused_total": during.get(
                'http_connections_refused_total{interface="n5g_eir",reason="limit"}', 0),
            "open_during": during.get('http_connections{interface="n5g_eir"}'),
            "open_after": after.get('http_connections{interface="n5g_eir"}'),
            "amf": amf.figures(), "rss_growth_mib": round(_rss_mib(gateway.pid) - rss_before, 1),
        }
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()


def api_probe(args: argparse.Namespace, state: str) -> dict[str, Any]:
    api = free_port()
    gateway, _, _, log = start_gateway(
        state, EIR_API_LISTEN=f"127.0.0.1:{api}", EIR_API_TOKENS=f"bench:read:{TOKEN}",
        EIR_API_HEADER_TIMEOUT_SECONDS=str(args.head_timeout))
    try:
        client = Client(f"http://127.0.0.1:{api}/openapi.json", 0.2, http2=False)
        client.start()
        client.ready.wait(10)
        rss_before = _rss_mib(gateway.pid)
        head = b"GET /v1/lists/entries HTTP/1.1\r\nHost: eir\r\nX-Slow: " + b"a" * 10_000
        slow = []
        for _ in range(args.slow):
            sock = socket.create_connection(("127.0.0.1", api), timeout=5)
            sock.setblocking(False)
            slow.append([sock, time.monotonic(), None, b""])  # socket, opened, closed at, got
        limit = time.monotonic() + args.seconds + args.head_timeout + 5.0
        sent = 0
        while time.monotonic() < limit and any(s[2] is None for s in slow):
            for entry in slow:
                sock, opened, closed, _ = entry
                if closed is not None:
                    continue
                try:
                    got = sock.recv(65536)
                    if not got:
                        entry[2] = time.monotonic() - opened
                        continue
                    entry[3] += got
                except BlockingIOError:
                    pass
                except OSError:
                    entry[2] = time.monotonic() - opened
                    continue
                try:
                    sock.send(head[sent:sent + 1])
                except OSError:
                    entry[2] = time.monotonic() - opened
            sent += 1
            time.sleep(1.0)
        closed_after = [s[2] for s in slow if s[2] is not None]
        answered = sum(1 for s in slow if s[3])
        for entry in slow:
            entry[0].close()
        client.stop_flag.set()
        client.join(10)
        return {
            "slow": args.slow, "head_timeout": args.head_timeout,
            "closed": len(closed_after), "answered": answered,
            "closed_after_s": {"min": round(min(closed_after), 2) if closed_after else None,
                               "max": round(max(closed_after), 2) if closed_after else None},
            "client": client.figures(),
            "rss_growth_mib": round(_rss_mib(gateway.pid) - rss_before, 1),
        }
    finally:
        gateway.terminate()
        gateway.wait(30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", default="n5g,api")
    parser.add_argument("--flood", type=int, default=500)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--head-timeout", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"python": sys.version.split()[0],
                              "load_average": os.getloadavg()[0]}
    probes = {"n5g": n5g_probe, "api": api_probe}
    for name in args.probes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"eir-hostile-{name}-") as state:
            result[name] = probes[name](args, state)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
