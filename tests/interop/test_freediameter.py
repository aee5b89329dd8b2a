"""freeDiameter 1.2.1 (Debian ``freediameterd`` + ``freediameter-extensions``) against the gateway.

freeDiameterd runs with a generated configuration: no TLS towards the gateway (``No_TLS``; a
self-signed certificate is still required by its configuration, made here with openssl), no
listening port (``Port = 0``: its ``ListenOn`` is ignored by this build, so it would otherwise
listen on every address), ``TwTimer = 6`` (the RFC 3539 minimum), and ``dbg_msg_dumps`` logging
every message it sends and receives, parsed here.

Debian's freeDiameter has no S13 command dictionary and no test application that could originate
an ME-Identity-Check-Request, so besides the base protocol (CER/CEA, DWR/DWA both ways, DPR/DPA
both ways) it is tested as what it is in real networks: a Diameter relay agent (DRA) between an
MME and the EIR. freeDiameter connects out to both the gateway and a minimal MME run by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.framing import Framer
from gateway.service import Gateway
from tests.e2e.conftest import metric_value, scrape
from tests.interop.conftest import (
    BLACKLISTED,
    GREYLISTED,
    WHITELISTED,
    StartGateway,
    diameter_port,
    kill_group,
    make_pki,
    require_tool,
    run_process,
    tls_env,
)

EXTENSIONS = Path("/usr/lib/freeDiameter")
FD_IDENTITY = "mme.fd.test"


@pytest.fixture(scope="module")
def freediameterd() -> str:
    path = require_tool("freeDiameterd", "Debian freediameterd + freediameter-extensions")
    for extension in ("dict_nasreq", "dict_dcca", "dict_dcca_3gpp", "dbg_msg_dumps"):
        if not (EXTENSIONS / f"{extension}.fdx").exists():
            pytest.skip(
                f"freeDiameter extension {extension}.fdx not installed (freediameter-extensions)"
            )
    return path


@pytest.fixture
async def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl", "freeDiameter wants a TLS certificate even with No_TLS")
    cert, key = tmp_path / "fd-cert.pem", tmp_path / "fd-key.pem"
    done = await run_process(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={FD_IDENTITY}", "-keyout", str(key), "-out", str(cert)],
        timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.explain()
    return cert, key


@dataclass
class Dump:
    """One message as dbg_msg_dumps logged it."""

    direction: str  # "SND" or "RCV"
    peer: str
    name: str
    lines: list[str] = field(default_factory=list)

    def avp(self, name: str) -> str | None:
        for line in self.lines:
            match = re.match(rf"AVP: '{re.escape(name)}'\(\d+\).* val=(.*)$", line)
            if match:
                return match.group(1)
        return None

    @property
    def result_code(self) -> int | None:
        value = self.avp("Result-Code")
        match = re.search(r"\((\d+) \(0x", value or "")
        return int(match.group(1)) if match else None


class FreeDiameter:
    def __init__(self, log: Path, process: asyncio.subprocess.Process) -> None:
        self.log = log
        self.process = process

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def dumps(self) -> list[Dump]:
        out: list[Dump] = []
        current: Dump | None = None
        for raw in self.text().splitlines():
            line = re.sub(r"^\d\d:\d\d:\d\d\s+\S+\s{3}", "", raw)
            start = re.match(r"(SND to|RCV from) '([^']*)':$", line)
            if start:
                current = Dump(start.group(1)[:3], start.group(2), "")
                out.append(current)
            elif current is not None and line.startswith("  "):
                body = line.strip()
                if not current.name:
                    current.name = body.strip("'")
                else:
                    current.lines.append(body)
            else:
                current = None
        return out

    def find(self, direction: str, name: str, peer: str = "eir.localdomain") -> list[Dump]:
        return [d for d in self.dumps() if (d.direction, d.name, d.peer) == (direction, name, peer)]

    async def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self.process.returncode is not None:
                pytest.fail(
                    f"freeDiameterd exited ({self.process.returncode}) waiting for {what}\n{self.text()[-5000:]}"
                )
            if loop.time() > deadline:
                pytest.fail(f"freeDiameter: no {what} within {timeout} s\n{self.text()[-5000:]}")
            await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 20) -> int:
        """SIGTERM: freeDiameter sends DPR to its peers and exits."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                kill_group(self.process)
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode


StartFd = Callable[..., Awaitable[FreeDiameter]]


@pytest.fixture
async def start_fd(
    freediameterd: str, certificate: tuple[Path, Path], tmp_path: Path
) -> AsyncIterator[StartFd]:
    started: list[FreeDiameter] = []

    async def start(
        peers: list[tuple[str, str, int]],
        tw: int = 6,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        sctp_to: tuple[str, str] | None = None,
    ) -> FreeDiameter:
        """``tls``: (certificate, key, CA) for TLS from the first byte (RFC 6733 §2.1 TLS/TCP)
        towards every peer; without it the peers are No_TLS. ``sctp_to``: (identity, address)
        of the one peer reached over SCTP, at that address (the others: TCP on 127.0.0.1);
        freeDiameter's own address (ListenOn, also its SCTP endpoint) is then that address
        too: it takes no loopback address as its own."""
        cert, key = certificate
        ca = cert
        if tls is not None:
            cert, key, ca = tls
        lines = [
            f'Identity = "{FD_IDENTITY}";',
            'Realm = "fd.test";',
            "Port = 0;",  # no listener at all
            "SecPort = 0;",
            *([f'ListenOn = "{sctp_to[1]}";'] if sctp_to else ["No_SCTP;"]),
            f"TwTimer = {tw};",
            "TcTimer = 6;",
            f'TLS_Cred = "{cert}", "{key}";',
            f'TLS_CA = "{ca}";',
        ]
        for extension in ("dict_nasreq", "dict_dcca", "dict_dcca_3gpp"):
            lines.append(f'LoadExtension = "{EXTENSIONS / extension}.fdx";')
        lines.append(f'LoadExtension = "{EXTENSIONS}/dbg_msg_dumps.fdx" : "0x0080";')
        for identity, realm, port in peers:
            address, transport = "127.0.0.1", "No_SCTP; " if sctp_to else ""
            if sctp_to is not None and sctp_to[0] == identity:
                address, transport = sctp_to[1], "No_TCP; "
            lines.append(
                f'ConnectPeer = "{identity}" {{ ConnectTo = "{address}"; Port = {port}; '
                f'{transport}{"" if tls else "No_TLS; "}Realm = "{realm}"; }};'
            )
        conf = tmp_path / f"fd{len(started)}.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = tmp_path / f"fd{len(started)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                freediameterd, "-c", str(conf),
                stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        fd = FreeDiameter(log, process)
        started.append(fd)
        return fd

    yield start
    for fd in started:
        if fd.process.returncode is None:
            kill_group(fd.process)
            await fd.process.wait()


def open_peer(gateway: Gateway, origin_host: str) -> bool:
    return any(p.origin_host == origin_host for p in gateway.server.open_peers)


async def counter(gateway: Gateway, command: str, direction: str, result: str = "") -> float:
    _, text = await scrape(gateway)
    return metric_value(
        text, "diameter_messages_total", command=command, direction=direction, result=result
    )


async def wait_counter(
    gateway: Gateway, command: str, direction: str, result: str, at_least: float = 1
) -> float:
    for _ in range(50):
        value = await counter(gateway, command, direction, result)
        if value >= at_least:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"gateway counted no {direction} {command} {result}")


async def test_capabilities_exchange_and_freediameter_watchdog(
    start_gateway: StartGateway, start_fd: StartFd
) -> None:
    """freeDiameter connects, CER/CEA completes (it goes to STATE_OPEN, we list it as an open
    peer with S13 and its relay id), its Tw = 6 s watchdog gets DWA 2001, and its SIGTERM DPR gets
    DPA 2001 (RFC 6733 §5.3, §5.5, §5.4)."""
    gateway = await start_gateway()
    fd = await start_fd([("eir.localdomain", "localdomain", diameter_port(gateway))], tw=6)
    await fd.wait(
        lambda: "'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'eir.localdomain'" in fd.text(), 10, "STATE_OPEN"
    )
    await fd.wait(lambda: open_peer(gateway, FD_IDENTITY), 5, "open peer on the gateway")
    (info,) = [p for p in gateway.server.open_peers if p.origin_host == FD_IDENTITY]
    assert info.product_name == "freeDiameter" and info.origin_realm == "fd.test"
    assert S13_APPLICATION_ID in info.applications  # through its relay application id
    (cea,) = fd.find("RCV", "Capabilities-Exchange-Answer")
    assert cea.result_code == 2001
    assert cea.avp("Origin-Host") == '"eir.localdomain"'

    # Tw 6 s with +-2 s jitter: a DWR within ~8 s, answered.
    await fd.wait(lambda: fd.find("RCV", "Device-Watchdog-Answer"), 12, "DWA")
    assert fd.find("SND", "Device-Watchdog-Request")
    assert all(d.result_code == 2001 for d in fd.find("RCV", "Device-Watchdog-Answer"))
    assert await wait_counter(gateway, "DWA", "out", "2001") >= 1
    assert open_peer(gateway, FD_IDENTITY)  # the link stayed up
    assert "STATE_SUSPECT" not in fd.text()

    assert await fd.terminate() == 0
    (dpa,) = fd.find("RCV", "Disconnect-Peer-Answer")
    assert dpa.result_code == 2001
    assert await counter(gateway, "DPA", "out", "2001") == 1
    await fd.wait(lambda: not open_peer(gateway, FD_IDENTITY), 5, "peer gone on the gateway")


async def test_gateway_watchdog_and_gateway_dpr_towards_freediameter(
    start_gateway: StartGateway, start_fd: StartFd
) -> None:
    """The other direction: our Tw (6 s) fires first, freeDiameter answers DWA 2001; on our
    stop() we send DPR (REBOOTING) and freeDiameter answers DPA 2001."""
    gateway = await start_gateway(EIR_DIAMETER_WATCHDOG_SECONDS="6")
    fd = await start_fd([("eir.localdomain", "localdomain", diameter_port(gateway))], tw=30)
    await fd.wait(lambda: open_peer(gateway, FD_IDENTITY), 10, "open peer on the gateway")
    await fd.wait(lambda: fd.find("RCV", "Device-Watchdog-Request"), 12, "our DWR")
    (dwa, *_) = fd.find("SND", "Device-Watchdog-Answer")
    assert dwa.result_code == 2001
    # Incoming answers are counted without their Result-Code (result="").
    assert await wait_counter(gateway, "DWA", "in", "") >= 1
    assert open_peer(gateway, FD_IDENTITY)

    await asyncio.wait_for(gateway.stop(), 15)
    await fd.wait(lambda: fd.find("SND", "Disconnect-Peer-Answer"), 5, "DPA to our DPR")
    (dpr,) = fd.find("RCV", "Disconnect-Peer-Request")
    assert dpr.avp("Disconnect-Cause") is not None and "REBOOTING" in (
        dpr.avp("Disconnect-Cause") or ""
    )
    assert fd.find("SND", "Disconnect-Peer-Answer")[0].result_code == 2001
    assert await fd.terminate() == 0


# -- freeDiameter as a relay agent between an MME and the gateway ------------------------------


class RelayedMme:
    """A minimal MME that freeDiameter connects to: answers CER and DWR, sends ECRs."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future[Message]] = {}
        self.cer: Message | None = None
        self.hop = 0x5000

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for raw in framer.feed(data):
                    self.received(decode_message(raw), writer)
        finally:
            writer.close()

    def received(self, message: Message, writer: asyncio.StreamWriter) -> None:
        if not message.is_request:
            future = self.pending.pop(message.hop_by_hop, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        answer = Message(message.command_code, 0, 0, message.hop_by_hop, message.end_to_end)
        answer.add("Result-Code", 2001)
        answer.add("Origin-Host", "mme.relay.test").add("Origin-Realm", "relay.test")
        if message.command_code == 257:
            self.cer = message
            answer.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0)
            answer.add("Product-Name", "relayed MME")
            answer.add(
                "Vendor-Specific-Application-Id",
                [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
            )
        writer.write(answer.encode())
        if message.command_code == 257:
            self.writer = writer
            self.connected.set()

    async def check(self, imei: str, session: str) -> Message:
        terminal = [Avp.new("IMEI", imei), Avp.new("Software-Version", "03")]
        return await self.send_ecr(
            session, terminal=terminal, extra=[Avp.new("User-Name", "001010123456789")]
        )

    async def send_ecr(
        self,
        session: str,
        *,
        terminal: list[Avp] | None,
        realm: str = "localdomain",
        destination_host: str | None = None,
        extra: Sequence[Avp] = (),
        timeout: float = 5.0,
    ) -> Message:
        """An ECR in the TS 29.272 §7.2.19 order, built from parts (edge cases leave some out)."""
        assert self.writer is not None
        self.hop += 1
        request = Message(324, S13_APPLICATION_ID, 0xC0, self.hop, 0x7E000000 + self.hop)
        request.add("Session-Id", session)
        request.add(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", VENDOR), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
        )
        request.add("Auth-Session-State", 1)
        request.add("Origin-Host", "mme.relay.test").add("Origin-Realm", "relay.test")
        if destination_host is not None:
            request.add("Destination-Host", destination_host)
        request.add("Destination-Realm", realm)
        if terminal is not None:
            request.add("Terminal-Information", terminal)
        request.avps.extend(extra)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        hop = self.hop
        self.pending[hop] = future
        self.writer.write(request.encode())
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(hop, None)  # answered, or given up: a late answer is dropped


async def start_relay(
    start_fd: StartFd,
    gateway: Gateway,
    mme: RelayedMme,
    server: asyncio.Server,
    *,
    sctp_address: str | None = None,
) -> FreeDiameter:
    """freeDiameter between ``mme`` (listening on ``server``) and the gateway, both peers open;
    ``sctp_address``: the gateway is reached there over SCTP."""
    mme_port = server.sockets[0].getsockname()[1]
    if sctp_address is None:
        gateway_port = diameter_port(gateway)
    else:
        (transport, _, gateway_port), *_ = gateway.diameter_sockets
        assert transport == "sctp"
    fd = await start_fd(
        [
            ("eir.localdomain", "localdomain", gateway_port),
            ("mme.relay.test", "relay.test", mme_port),
        ],
        tw=30,
        sctp_to=("eir.localdomain", sctp_address) if sctp_address else None,
    )
    # Bounds, not expectations: generous for an emulated guest (tests/sctp).
    await fd.wait(mme.connected.is_set, 30, "connection to the MME")
    await fd.wait(lambda: open_peer(gateway, FD_IDENTITY), 30, "open peer on the gateway")
    # Both peers open on freeDiameter's side too, or it has no route yet (3002).
    for peer in ("eir.localdomain", "mme.relay.test"):
        line = f"'STATE_WAITCEA'\t-> 'STATE_OPEN'\t'{peer}'"
        await fd.wait(lambda line=line: line in fd.text(), 10, f"{peer} open")
    return fd


async def test_freediameter_relays_ecr_and_eca(
    start_gateway: StartGateway, start_fd: StartFd
) -> None:
    """MME -> freeDiameter (relay) -> gateway and back: freeDiameter adds its Route-Record,
    routes on Destination-Realm to us, and hands our ECA back with the MME's identifiers."""
    gateway = await start_gateway()
    mme = RelayedMme()
    server = await asyncio.start_server(mme.serve, "127.0.0.1", 0)
    try:
        fd = await start_relay(start_fd, gateway, mme, server)
        for index, (imei, status) in enumerate(
            (
                ("35209900123456", WHITELISTED),
                ("35693803564380", BLACKLISTED),
                ("35332011900123", GREYLISTED),
            )
        ):
            session = f"mme.relay.test;relay;{index}"
            answer = await mme.check(imei, session)
            assert answer.command_code == 324 and answer.flags == 0x40, answer
            assert answer.get("Session-Id") == session
            assert answer.get("Result-Code") == 2001, answer
            assert (
                answer.find(1445, VENDOR) is not None and answer.find(1445, VENDOR).value == status
            )
            assert answer.get("Origin-Host") == "eir.localdomain"
        # What freeDiameter forwarded to us carried its Route-Record (RFC 6733 §6.1.9).
        (forwarded, *_) = fd.find("SND", "(not found in dictionary)")
        assert forwarded.avp("Route-Record") == '"mme.relay.test"'
        assert await counter(gateway, "ECA", "out", "2001") == 3
        assert await fd.terminate() == 0
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


# -- TLS (RFC 6733 §2.1, §13): freeDiameter's GnuTLS against our Python ssl listener ---------


def tls_port(gateway: Gateway) -> int:
    transport, host, port = gateway.diameter_sockets[0]
    assert (transport, host) == ("tls", "127.0.0.1")
    return port


async def test_freediameter_over_mutual_tls(
    start_gateway: StartGateway, start_fd: StartFd, tmp_path: Path
) -> None:
    """TLS from the first byte with client certificates both ways: GnuTLS (freeDiameter) and our
    listener verify each other against one CA; CER/CEA, DWR/DWA and DPR/DPA then run inside TLS."""
    pki = await make_pki(tmp_path, "ok", ("eir.localdomain", FD_IDENTITY))
    gateway = await start_gateway(**tls_env(pki))
    fd = await start_fd(
        [("eir.localdomain", "localdomain", tls_port(gateway))],
        tw=6,
        tls=(pki[FD_IDENTITY], pki[f"{FD_IDENTITY}.key"], pki["ca"]),
    )
    await fd.wait(lambda: open_peer(gateway, FD_IDENTITY), 10, "open peer over TLS")
    (info,) = [p for p in gateway.server.open_peers if p.origin_host == FD_IDENTITY]
    assert info.transport == "tls"
    # Our side is open once the CEA is sent; freeDiameter logs its side after reading it.
    connected = re.compile(r"Connected to 'eir.localdomain' \(TCP,TLS,")
    await fd.wait(lambda: connected.search(fd.text()), 10, "its side of the TLS connection")
    await fd.wait(lambda: fd.find("RCV", "Device-Watchdog-Answer"), 12, "DWA over TLS")
    assert all(d.result_code == 2001 for d in fd.find("RCV", "Device-Watchdog-Answer"))
    assert await fd.terminate() == 0
    (dpa,) = fd.find("RCV", "Disconnect-Peer-Answer")
    assert dpa.result_code == 2001


async def test_freediameter_with_a_certificate_of_another_ca_is_refused(
    start_gateway: StartGateway, start_fd: StartFd, tmp_path: Path
) -> None:
    """tls_verify_client: a client certificate from an unknown CA never gets to CER/CEA."""
    # One CA issued both certificates, and freeDiameter trusts it; the gateway trusts only an
    # unrelated CA, so freeDiameter's client certificate fails our verification.
    pki = await make_pki(tmp_path, "ok", ("eir.localdomain", FD_IDENTITY))
    other = await make_pki(tmp_path, "other", ())
    gateway = await start_gateway(**{**tls_env(pki), "EIR_DIAMETER_TLS_CA": str(other["ca"])})
    fd = await start_fd(
        [("eir.localdomain", "localdomain", tls_port(gateway))],
        tls=(pki[FD_IDENTITY], pki[f"{FD_IDENTITY}.key"], pki["ca"]),
    )
    await fd.wait(lambda: "freeDiameterd daemon initialized" in fd.text(), 10, "start-up")
    # It tries, the handshake fails on our side, it never reaches CER/CEA.
    await fd.wait(lambda: "TLS" in fd.text().split("daemon initialized", 1)[1], 10, "a TLS failure")
    await asyncio.sleep(1)
    assert fd.process.returncode is None, fd.text()[-3000:]
    assert not open_peer(gateway, FD_IDENTITY)
    assert "'STATE_OPEN'\t'eir.localdomain'" not in fd.text()
    assert await counter(gateway, "CER", "in") == 0
    await fd.terminate()
