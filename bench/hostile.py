"""Hostile peers against a live gateway: isolation, recovery and stopping under abuse (issue #10).

Method.

* The gateway runs as a process (``python -m gateway.cli run``, embedded default configuration,
  only the ports and state directory overridden) on loopback.
* ``--peers`` abusive peers (default 16), in one separate process, each complete CER/CEA under
  its own Origin-Host and then pipeline slightly mutated MICR/DWR/CER frames as fast as the
  gateway takes them: bits flipped, AVP lengths, codes and flags changed, unknown and M-bit AVPs
  added, Grouped AVPs nested and repeated, header flags changed, and now and then a Message
  Length that breaks framing. Answers are read and discarded. A peer that the gateway
  disconnects (framing error, too many malformed messages) connects again and sends a new CER.
  Every frame is a fresh mutation (new shapes all the time), up to ``--frames`` frames in all or
  ``--seconds`` seconds, whichever comes first.
* Meanwhile a well-behaved MME (a thread of this process, its own connection) sends one MICR
  every 100 ms and records each answer's latency (5 s timeout).
* Then: the time a new peer takes to complete CER/CEA right after the abuse stops; the
  gateway's RSS growth (VmRSS before and after); and, with the abuse running again, the time
  from SIGTERM to the process's exit (it must be within the DPA timeout, 5 s).

Targets (issue #10): no crash, RSS growth < 100 MB, the well-behaved peer answered within 1 s
every time, p99 < 100 ms; a new peer's CER answered at once after the abuse; SIGTERM honoured.

Run: ``.venv/bin/python bench/hostile.py [--frames N] [--seconds S] [--peers P] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diameter.codec import Avp, Message  # noqa: E402
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import _wait_port, _wait_ready, free_port  # noqa: E402

from tests.blocking_socket import recv_message  # noqa: E402
from tests.gateway_process import process_env  # noqa: E402

ME_IDENTITY_CHECK, CER, DWR = 324, 257, 280
DPA_TIMEOUT = 5.0  # the embedded default's diameter.dpa_timeout_seconds: SIGTERM to exit
FLAG_R, FLAG_P = 0x80, 0x40


# -- messages ---------------------------------------------------------------------------------
def cer(host: str) -> bytes:
    message = Message(CER, 0, FLAG_R, random.getrandbits(32), random.getrandbits(32))
    message.add("Origin-Host", host).add("Origin-Realm", "test")
    message.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0).add("Product-Name", "hostile")
    message.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    return message.encode()


def micr(host: str, serial: int) -> bytes:
    message = Message(ME_IDENTITY_CHECK, S13_APPLICATION_ID, FLAG_R | FLAG_P, serial, serial)
    message.add("Session-Id", f"{host};1;{serial}")
    message.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    message.add("Auth-Session-State", 1)
    message.add("Origin-Host", host).add("Origin-Realm", "test")
    message.add("Destination-Realm", "localdomain")
    message.add(
        "Terminal-Information",
        [Avp.new("IMEI", "35693803564380"), Avp.new("Software-Version", "01")],
    )
    message.add("User-Name", "001010000000001")
    return message.encode()


def dwr(host: str) -> bytes:
    message = Message(DWR, 0, FLAG_R, random.getrandbits(32), random.getrandbits(32))
    message.add("Origin-Host", host).add("Origin-Realm", "test")
    return message.encode()


def _avp_offsets(raw: bytes | bytearray, start: int = 20, end: int | None = None) -> list[int]:
    end = len(raw) if end is None else end
    offsets, offset = [], start
    while offset + 8 <= end:
        offsets.append(offset)
        length = int.from_bytes(raw[offset + 5 : offset + 8], "big")
        if length < 8:
            break
        offset += (length + 3) & ~3
    return offsets


def _avp(code: int, flags: int, data: bytes, vendor: int = 0) -> bytes:
    if vendor:
        flags |= 0x80
        head = struct.pack("!IIi", code, flags << 24 | (12 + len(data)), vendor)
    else:
        head = struct.pack("!II", code, flags << 24 | (8 + len(data)))
    return head + data + b"\0" * (-len(data) & 3)


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """One to three mutations; the Message Length is fixed up except for framing abuse."""
    buf = bytearray(raw)
    keep_length = True
    for _ in range(rng.randint(1, 3)):
        how = rng.random()
        offsets = _avp_offsets(buf)
        if how < 0.15 and len(buf) > 20:  # flip a bit after the header
            bit = rng.randrange(160, len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
        elif how < 0.25 and offsets:  # an AVP's length
            at = rng.choice(offsets)
            buf[at + 5 : at + 8] = rng.randrange(0, 64).to_bytes(3, "big")
        elif how < 0.35 and offsets:  # an AVP's flags
            buf[rng.choice(offsets) + 4] = rng.randrange(256)
        elif how < 0.45 and offsets:  # an AVP's code
            at = rng.choice(offsets)
            buf[at : at + 4] = rng.choice((rng.randrange(1, 2000), rng.getrandbits(32))).to_bytes(4, "big")
        elif how < 0.60:  # extra AVPs: unknown (M or not), base AVPs, in a new order
            extra = b"".join(
                _avp(rng.choice((rng.randrange(1, 1500), 99999 + rng.randrange(1000))),
                     rng.choice((0, 0x40)), os.urandom(rng.randrange(0, 12)))
                for _ in range(rng.randrange(1, 8))
            )
            buf += extra
        elif how < 0.75:  # nested Grouped: Terminal-Information or Proxy-Info chains
            inner = _avp(1402, 0xC0, b"35693803564380", VENDOR)
            for _ in range(rng.randrange(1, 24)):
                code, vendor = rng.choice(((1401, VENDOR), (284, 0), (297, 0), (260, 0)))
                inner = _avp(code, 0x40, inner + _avp(rng.randrange(1, 3000), 0, b"x"), vendor)
            buf += inner
        elif how < 0.85:  # repeated Grouped AVPs with new children each
            for _ in range(rng.randrange(1, 10)):
                children = b"".join(
                    _avp(rng.randrange(1400, 1500), rng.choice((0x80, 0xC0)), b"01", VENDOR)
                    for _ in range(rng.randrange(1, 6))
                )
                buf += _avp(1401, 0xC0, children, VENDOR)
        elif how < 0.95:  # header flags
            buf[4] = rng.randrange(256) | FLAG_R
        elif how < 0.995:  # truncated AVP area
            buf = buf[: rng.randrange(20, len(buf) + 1) & ~3]
        else:  # framing abuse: a Message Length that cannot be right
            buf[1:4] = rng.randrange(0, 1 << 24).to_bytes(3, "big")
            keep_length = False
    if keep_length:
        del buf[len(buf) & ~3 :]
        buf[1:4] = len(buf).to_bytes(3, "big")
    buf[12:20] = os.urandom(8)
    return bytes(buf)


# -- the abusers (their own process) ----------------------------------------------------------
def _handshake(port: int, host: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(cer(host))
    answer = recv_message(sock)
    code = _result_code(answer)
    if code != 2001:
        sock.close()
        raise ConnectionError(f"CER of {host} answered {code}")
    return sock


def abuse(port: int, peers: int, frames: int, seconds: float, seed: int, out: Any) -> None:
    rng = random.Random(seed)
    hosts = [f"hostile{i}.test" for i in range(peers)]
    bases = {h: (micr(h, 1), dwr(h), cer(h)) for h in hosts}
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, memoryview] = {}
    owner: dict[socket.socket, str] = {}
    stats = {"frames": 0, "reconnects": 0, "answers_bytes": 0, "refused": 0}

    def connect(host: str) -> None:
        while True:
            try:
                sock = _handshake(port, host)
                break
            except (OSError, ConnectionError):
                stats["refused"] += 1
                if time.monotonic() > until:
                    return
                time.sleep(0.05)
        sock.setblocking(False)
        owner[sock] = host
        pending[sock] = memoryview(b"")
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def batch(host: str) -> tuple[bytes, int]:
        parts = []
        for _ in range(32):
            base = rng.choices(bases[host], weights=(8, 1, 1))[0]
            parts.append(mutate(rng, base))
        return b"".join(parts), len(parts)

    until = time.monotonic() + seconds
    for host in hosts:
        connect(host)
    counted: dict[socket.socket, int] = {}
    while stats["frames"] < frames and time.monotonic() < until and owner:
        for key, events in selector.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            dead = False
            if events & selectors.EVENT_READ:
                try:
                    chunk = sock.recv(1 << 16)
                    stats["answers_bytes"] += len(chunk)
                    dead = not chunk
                except BlockingIOError:
                    pass
                except OSError:
                    dead = True
            if not dead and events & selectors.EVENT_WRITE:
                view = pending[sock]
                if not view:
                    data, n = batch(owner[sock])
                    view, counted[sock] = memoryview(data), n
                try:
                    sent = sock.send(view)
                    view = view[sent:]
                    if not view:
                        stats["frames"] += counted.pop(sock, 0)
                    pending[sock] = view
                except BlockingIOError:
                    pending[sock] = view
                except OSError:
                    dead = True
            if dead:
                host = owner.pop(sock)
                selector.unregister(sock)
                pending.pop(sock, None)
                counted.pop(sock, None)
                sock.close()
                stats["reconnects"] += 1
                connect(host)
    for sock in list(owner):
        sock.close()
    out.put(stats)


# -- the well-behaved MME ---------------------------------------------------------------------




def _result_code(raw: bytes) -> int | None:
    for offset in _avp_offsets(raw):
        if int.from_bytes(raw[offset : offset + 4], "big") == 268:
            return int.from_bytes(raw[offset + 8 : offset + 12], "big")
    return None


class WellBehaved(threading.Thread):
    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        sock = _handshake(self.port, "good.test")
        sock.settimeout(5.0)
        serial = 1
        while not self.stop_flag.is_set():
            serial += 1
            sent = time.perf_counter()
            try:
                sock.sendall(micr("good.test", serial))
                while True:
                    answer = recv_message(sock)
                    if int.from_bytes(answer[12:16], "big") == serial:
                        break
                if _result_code(answer) != 2001:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - sent)
            except (OSError, ConnectionError):
                self.failures += 1
                sock.close()
                sock = _handshake(self.port, "good.test")
                sock.settimeout(5.0)
            self.stop_flag.wait(max(0.0, 0.1 - (time.perf_counter() - sent)))
        sock.close()


# -- the run ----------------------------------------------------------------------------------
def start_gateway(
    state: str, profile: str | None = None, ready_within: float = 60.0, **overrides: str
) -> tuple[subprocess.Popen[bytes], int, int, Any]:
    """``python -m gateway.cli run`` on free loopback ports, state in ``state``, ready within
    ``ready_within`` seconds; returns the process, its Diameter and metrics ports and its open
    log file."""
    port, metrics = free_port(), free_port()
    env = process_env(port, metrics, state, **{"PYTHONPATH": str(ROOT), **overrides})
    log = open(Path(state) / "gateway.log", "wb")  # closed by the caller
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", os.path.abspath(profile)]
    gateway = subprocess.Popen(
        [*command, "-m", "gateway.cli", "run"], env=env, cwd=state, stdout=log, stderr=log
    )
    deadline = time.monotonic() + ready_within
    try:
        _wait_port(port, gateway, deadline)
        _wait_ready(metrics, deadline)
    except BaseException:
        gateway.kill()
        gateway.wait()
        log.close()
        raise
    return gateway, port, metrics, log


def scrape(metrics_port: int) -> dict[str, float]:
    """The gateway's unlabelled samples (and labelled ones under their full text), by name."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_abuse(port: int, args: argparse.Namespace, seconds: float, seed: int) -> tuple[Any, Any]:
    queue: Any = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(
        target=abuse, args=(port, args.peers, args.frames, seconds, seed, queue)
    )
    process.start()
    return process, queue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="abuse time limit")
    parser.add_argument("--peers", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile-gateway", metavar="FILE", help="run the gateway under cProfile")
    args = parser.parse_args(argv)

    state = tempfile.mkdtemp(prefix="eir-hostile-")
    gateway, port, metrics, log = start_gateway(state, args.profile_gateway)
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "peers": args.peers,
    }
    try:
        good = WellBehaved(port)
        good.start()
        time.sleep(1.0)
        rss_before = _rss_mib(gateway.pid)
        started = time.monotonic()
        process, queue = run_abuse(port, args, args.seconds, 1)
        stats = queue.get(timeout=args.seconds + 60)
        process.join(30)
        abuse_seconds = time.monotonic() - started
        good.stop_flag.set()
        good.join(10)
        rss_after = _rss_mib(gateway.pid)
        seen = scrape(metrics)
        # A new peer right after the abuse.
        t0 = time.perf_counter()
        try:
            _handshake(port, "newcomer.test").close()
            new_cer = time.perf_counter() - t0
        except (OSError, ConnectionError) as exc:
            new_cer = float("nan")
            result["new_cer_error"] = str(exc)
        # SIGTERM while abused again.
        process, queue = run_abuse(port, argparse.Namespace(**{**vars(args), "frames": 1 << 40}), 8.0, 2)
        time.sleep(3.0)
        t0 = time.perf_counter()
        result["sigterm_sent_at"] = time.strftime("%H:%M:%S", time.localtime()) + f"{time.time() % 1:.3f}"[1:]
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(60)
            sigterm = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            sigterm = float("nan")
        process.join(30)
        if process.is_alive():
            process.kill()
        lat = good.latencies
        result.update(
            frames=stats["frames"],
            abuse_seconds=round(abuse_seconds, 1),
            frames_per_second=round(stats["frames"] / abuse_seconds),
            reconnects=stats["reconnects"],
            refused_connects=stats["refused"],
            good_answers=len(lat),
            good_failures=good.failures,
            good_over_1s=sum(1 for x in lat if x > 1.0),
            good_p50_ms=round(_percentile(lat, 0.5) * 1000, 2),
            good_p99_ms=round(_percentile(lat, 0.99) * 1000, 2),
            good_max_ms=round(max(lat, default=float("nan")) * 1000, 2),
            rss_growth_mib=round(rss_after - rss_before, 1),
            malformed_disconnects=seen.get("diameter_malformed_disconnects_total", 0),
            overload_3004=seen.get("diameter_overload_rejected_total", 0),
            new_peer_cer_ms=round(new_cer * 1000, 1),
            sigterm_exit_seconds=round(sigterm, 2),
            sigterm_within_dpa_timeout=sigterm <= DPA_TIMEOUT,
            exit_status=gateway.returncode,
            crashed=gateway.returncode not in (0, None),
        )
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        log.close()
    text = (Path(state) / "gateway.log").read_text(errors="replace")
    result["tracebacks"] = text.count("Traceback")
    print_figures(result, args.json)
    return 0


def print_figures(result: dict[str, Any], as_json: bool) -> None:
    """One JSON line, or one ``key value`` line per figure."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}}{value}")


if __name__ == "__main__":
    sys.exit(main())
