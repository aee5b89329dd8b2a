"""Two gateway processes behind freeDiameter configured from ``deploy/freediameter/``: the
pieces shared by the failover test and ``bench/relay_failover.py``.

The relay's configuration is the shipped one, rendered for loopback: freeDiameter does not
listen (``Port = 0``; its 1.2.1 build would listen on every address) and connects out to the
gateways and to the test's MME instead; the test's certificate replaces the paths of
``TLS_Cred``/``TLS_CA``. Everything else (Tw, Tc, rt_load_balance, rt_busypeers and its
RelayTimeout) is as shipped.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from diameter.codec import Avp, Message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from tests.interop.test_freediameter import RelayedMme

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "freediameter"
EXTENSIONS = Path("/usr/lib/freeDiameter")
REALM = "example.net"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_relay_config(
    directory: Path, gateways: list[tuple[str, int]], mme: tuple[str, int],
    identity: str, cert: Path, key: Path,
) -> Path:
    """The shipped freeDiameter.conf for loopback, as ``identity`` (the CN of ``cert``)."""
    busypeers = directory / "rt_busypeers.conf"
    busypeers.write_text((DEPLOY / "rt_busypeers.conf").read_text())
    lines = []
    for line in (DEPLOY / "freeDiameter.conf").read_text().splitlines():
        if line.startswith(("ConnectPeer", "ListenOn")):
            continue
        if line.startswith("Identity ="):
            line = f'Identity = "{identity}";'
        elif line.startswith("Port ="):
            line = "Port = 0;\nNo_SCTP;"
        elif line.startswith("TLS_Cred"):
            line = f'TLS_Cred = "{cert}", "{key}";'
        elif line.startswith("TLS_CA"):
            line = f'TLS_CA = "{cert}";'
        elif line.startswith("LoadExtension"):
            line = re.sub(r'"([a-z_0-9]+\.fdx)"', lambda m: f'"{EXTENSIONS / m.group(1)}"', line)
            line = line.replace('"/etc/freeDiameter/rt_busypeers.conf"', f'"{busypeers}"')
        lines.append(line)
    for peer, port in gateways:
        lines.append(f'ConnectPeer = "{peer}" {{ ConnectTo = "127.0.0.1"; Port = {port}; '
                     f'No_TLS; Realm = "{REALM}"; }};')
    peer, port = mme
    lines.append(f'ConnectPeer = "{peer}" {{ ConnectTo = "127.0.0.1"; Port = {port}; '
                 f'No_TLS; Realm = "mme.test"; }};')
    path = directory / "freeDiameter.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class GatewayProcess:
    """``eir-gateway run`` on fixed loopback ports, so that it can be killed and restarted."""

    identity: str
    state: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            EIR_DIAMETER_ORIGIN_HOST=self.identity,
            EIR_DIAMETER_ORIGIN_REALM=REALM,
            EIR_DIAMETER_HOST_IP_ADDRESSES="127.0.0.1",
            EIR_DIAMETER_LISTEN=f"tcp://127.0.0.1:{self.port}",
            EIR_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}",
            EIR_N5G_EIR_LISTEN="",  # S13 only
            EIR_STATE_DIRECTORY=str(self.state),
            EIR_LOGGING_LEVEL="WARNING",
        )

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", env=self.env, cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        await wait_listening(self.port, self.process)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            os.kill(self.process.pid, sig)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def metric(self, name: str, **labels: str) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        text = (await reader.read()).decode()
        writer.close()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if match and all(part in (match.group(1) or "") for part in wanted.split(",") if part):
                total += float(match.group(2))
        return total


async def wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"gateway exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"nothing listens on {port}")


def ecr_template(origin_host: str = "mme.relay.test") -> tuple[bytearray, int]:
    """An encoded ECR (a known TAC, an IMSI) and the offset of its Session-Id's 10 digits."""
    request = Message(324, S13_APPLICATION_ID, 0xC0, 0, 0)
    request.add("Session-Id", f"{origin_host};ha;" + "0" * 10)
    request.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    request.add("Auth-Session-State", 1)
    request.add("Origin-Host", origin_host).add("Origin-Realm", "relay.test")
    request.add("Destination-Realm", REALM)
    request.add("Terminal-Information",
                [Avp.new("IMEI", "35209900123456"), Avp.new("Software-Version", "03")])
    request.add("User-Name", "001010123456789")
    raw = bytearray(request.encode())
    return raw, raw.index(b"0" * 10)


def numbered(template: tuple[bytearray, int], index: int, hop_by_hop: int = 0) -> bytearray:
    """The template with its Session-Id, Hop-by-Hop and End-to-End made unique by ``index``."""
    raw, session_at = template
    out = bytearray(raw)
    struct.pack_into("!II", out, 12, hop_by_hop, (0x7E000000 + index) & 0xFFFFFFFF)
    out[session_at:session_at + 10] = b"%010d" % index
    return out


OnAnswer = Callable[[int | None], None]
Send = Callable[[int, OnAnswer], None]


def relay_sender(mme: RelayedMme) -> Send:
    """Pre-encoded ECRs over the connection freeDiameter opened to ``mme`` (which still answers
    the relay's DWRs and matches answers by Hop-by-Hop): no task or timer per request, so one
    Python driver keeps up with thousands per second."""
    template = ecr_template()

    def send(index: int, on_answer: OnAnswer) -> None:
        assert mme.writer is not None
        mme.hop += 1
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: on_answer(f.result().get("Result-Code")))
        mme.pending[mme.hop] = future
        mme.writer.write(numbered(template, index, mme.hop))

    return send


@dataclass
class Outcome:
    sent: float
    answered: float | None = None
    result: int | None = None


async def drive(
    send: Send, rate: float, duration: float, timeout: float = 5.0,
    events: dict[float, Callable[[], object]] | None = None,
) -> list[Outcome]:
    """Open loop: ``rate`` requests per second for ``duration`` seconds (rate x duration in
    all), then up to ``timeout`` for the last answers; a request not answered within
    ``timeout`` of being sent counts as lost (``answered`` None). ``events``: callbacks run
    once at those seconds into the run (awaited when they return a coroutine)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcomes: list[Outcome] = []
    pending_events = sorted((events or {}).items(), key=lambda kv: kv[0])
    total = int(rate * duration)

    def answered(outcome: Outcome, result: int | None) -> None:
        outcome.answered, outcome.result = loop.time(), result

    index = 0
    while index < total:
        now = loop.time()
        while pending_events and start + pending_events[0][0] <= now:
            _, action = pending_events.pop(0)
            result = action()
            if asyncio.iscoroutine(result):
                await result
        due = min(total, int((loop.time() - start) * rate) + 1)
        while index < due:
            outcome = Outcome(loop.time())
            outcomes.append(outcome)
            send(index, functools.partial(answered, outcome))
            index += 1
        await asyncio.sleep(0.001)
    deadline = loop.time() + timeout
    while any(o.answered is None for o in outcomes) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for outcome in outcomes:
        if outcome.answered is not None and outcome.answered - outcome.sent > timeout:
            outcome.answered = None  # the MME had given up on it
    return outcomes


def longest_gap(outcomes: list[Outcome]) -> float:
    """The longest time without any answer, between the first and the last answer."""
    times = sorted(o.answered for o in outcomes if o.answered is not None)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
