"""The gateway on sctp:// in a kernel with SCTP: the simulator's whole exchange, multi-homing
with the loss of the primary path, and peers that misbehave at the transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sctp

from diameter.application import Application
from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings, SctpSettings, TransportSettings
from diameter.transport import Client
from gateway.service import Gateway
from gateway.simulator.pcap import split_messages
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.traffic import Check
from tests.e2e.conftest import Mme, StartGateway
from tests.e2e.test_conformance_edges import DPR, cer, ecr
from tests.sctp.guest import raw

BLACK, WHITE = "35693803564380", "35209900000000"
CHECKS = [Check(BLACK, expected="BLACKLISTED"), Check(WHITE, expected="WHITELISTED")]
COMMANDS = {257: "CE", 280: "DW", 282: "DP", 324: "ME"}
SCTP_INACTIVE = 0  # enum sctp_spinfo_state (RFC 6458 §8.2.2)


def sctp_port(gateway: Gateway) -> int:
    transport, _, port = gateway.diameter_sockets[0]
    assert transport == "sctp"
    return port


def mme_node(origin_host: str) -> Node:
    identity = LocalIdentity(origin_host=origin_host, origin_realm="test")
    return Node(
        PeerSettings(identity=identity),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )


async def connect(
    gateway: Gateway, origin_host: str, hosts: list[str] | None = None, **kwargs: object
) -> Mme:
    node = mme_node(origin_host)
    client = await Client.connect(
        node, hosts or "127.0.0.1", sctp_port(gateway), transport="sctp", **kwargs  # type: ignore[arg-type]
    )
    return Mme(client, node)


async def test_simulator_cer_micr_dwr_dpr(start_gateway: StartGateway) -> None:
    """`eir-gateway simulate --transport sctp`'s engine: CER/CEA, MICR/MICA with the expected
    statuses, DWR/DWA on the idle link (Tw 6 s, RFC 3539), DPR/DPA at the end (RFC 6733 §5.4)."""
    gateway = await start_gateway(
        EIR_DIAMETER_LISTEN="sctp://127.0.0.1:0",
        EIR_DIAMETER_WATCHDOG_SECONDS="6",
        EIR_DIAMETER_WATCHDOG_JITTER_SECONDS="0",
    )
    settings = SimulatorSettings(
        port=sctp_port(gateway), transport="sctp", mode="open", rate=0.1, duration=7.5,
        watchdog=6.0, count=2, capture=True, max_duration=30.0,
    )  # fmt: skip
    report, (capture,) = await simulate(settings, CHECKS)
    assert report.ok, report.render_text()
    assert report.stats.outcomes == {"BLACKLISTED": 1}  # one MICR: rate 0.1/s over 7.5 s
    seen = []
    for _, outgoing, data in capture.records:
        for message in split_messages(data):
            request = bool(message[4] & 0x80)
            code = int.from_bytes(message[5:8], "big")
            seen.append(("out" if outgoing else "in", COMMANDS[code] + ("R" if request else "A")))
    assert seen[:2] == [("out", "CER"), ("in", "CEA")]
    assert ("out", "MER") in seen and ("in", "MEA") in seen
    assert {("out", "DWR"), ("in", "DWA")} <= set(seen) or {("in", "DWR"), ("out", "DWA")} <= set(seen)
    assert seen[-2:] == [("out", "DPR"), ("in", "DPA")]


async def _ip(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"ip {' '.join(args)}: {out.decode()}"


FAST = {  # failover in about a second instead of minutes (RFC 4960 §15 defaults)
    "EIR_DIAMETER_SCTP_RTO_INITIAL_SECONDS": "0.2",
    "EIR_DIAMETER_SCTP_RTO_MIN_SECONDS": "0.1",
    "EIR_DIAMETER_SCTP_RTO_MAX_SECONDS": "0.4",
    "EIR_DIAMETER_SCTP_HEARTBEAT_INTERVAL_SECONDS": "0.3",
    "EIR_DIAMETER_SCTP_PATH_MAX_RETRANSMISSIONS": "2",
}


async def test_multihomed_gateway_survives_the_loss_of_the_primary_path(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway bound (sctp_bindx) to 127.0.0.11 and 127.0.0.12; the MME from 127.0.0.13 and
    127.0.0.14. The INIT-ACK advertises both gateway addresses; then every packet to 127.0.0.11
    is dropped (a blackhole routing rule ahead of the local table): the MME's retransmissions
    move to 127.0.0.12 (RFC 4960 §6.4), the path to .11 goes inactive, and the association, its
    Diameter peer and every check go on."""
    caplog.set_level(logging.INFO, "diameter.transport.server")
    gateway = await start_gateway(EIR_DIAMETER_LISTEN="sctp://127.0.0.11,127.0.0.12:0", **FAST)
    port = sctp_port(gateway)
    assert gateway.diameter_sockets == [("sctp", "127.0.0.11", port), ("sctp", "127.0.0.12", port)]
    assert f"listening on sctp://127.0.0.11:{port}, sctp://127.0.0.12:{port}" in caplog.text
    options = SctpSettings(rto_initial=0.2, rto_min=0.1, rto_max=0.4, heartbeat_interval=0.3,
                           path_max_retransmissions=2)  # fmt: skip
    mme = await connect(
        gateway, "mme.multihomed.test", ["127.0.0.11"], local_addresses=("127.0.0.13", "127.0.0.14"),
        settings=TransportSettings(sctp=options),
    )  # fmt: skip
    assert mme.client.connection is not None and mme.client.connection.transport is not None
    sock = mme.client.connection.transport.get_extra_info("socket")
    association = sctp.sctpsocket_tcp(socket.AF_INET, sock)
    # Connected to .11 only: .12 came in the INIT-ACK.
    assert sorted(association.getpaddrs()) == [("127.0.0.11", port), ("127.0.0.12", port)]
    assert sock.getpeername() == ("127.0.0.11", port)  # the primary path
    (connection,) = gateway.server.connections  # type: ignore[union-attr]
    remote = sctp.sctpsocket_tcp(socket.AF_INET, connection.transport.get_extra_info("socket"))
    assert sorted(a for a, _ in remote.getpaddrs()) == ["127.0.0.13", "127.0.0.14"]
    for _ in range(3):
        assert (await mme.check(BLACK, sv="01")).get("Result-Code") == 2001

    # The local routing rule (priority 0) would deliver anything to 127/8: move it after ours.
    await _ip("rule", "add", "priority", "100", "lookup", "local")
    await _ip("rule", "del", "priority", "0")
    await _ip("rule", "add", "priority", "10", "to", "127.0.0.11", "blackhole")
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(mme.check(WHITE, sv="01") for _ in range(10))), 20
        )
        assert all(a.get("Result-Code") == 2001 for a in answers)
        # Path.Max.Retrans 2, heartbeats every 0.3 s, RTO <= 0.4 s: inactive within seconds.
        for _ in range(100):
            if association.get_paddrinfo(0, ("127.0.0.11", port)).state == SCTP_INACTIVE:
                break
            await asyncio.sleep(0.1)
        state = association.get_paddrinfo(0, ("127.0.0.11", port)).state
        assert state == SCTP_INACTIVE, f"path to 127.0.0.11 in state {state}, not inactive"
        assert (await mme.check(BLACK, sv="01")).get("Result-Code") == 2001
    finally:
        await _ip("rule", "del", "priority", "10")
        await _ip("rule", "add", "priority", "0", "lookup", "local")
        await _ip("rule", "del", "priority", "100")
    # The same association and Diameter connection throughout: no new CER.
    assert gateway.server.connections == {connection}  # type: ignore[union-attr]
    assert mme.client.is_open
    await mme.close()


async def test_association_aborted_mid_message(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer sends CER, then half of an ECR, then ABORTs: the gateway drops that connection
    with a log line, and serves the other peer as before."""
    caplog.set_level(logging.INFO)
    gateway = await start_gateway(EIR_DIAMETER_LISTEN="sctp://127.0.0.1:0")
    port = sctp_port(gateway)
    other = await connect(gateway, "mme.other.test")

    def aborted() -> None:
        sock = raw.raw_socket()
        sock.connect(("127.0.0.1", port))
        raw.send(sock, cer().encode())
        answer = raw.receive(sock)
        assert answer is not None and decode_message(answer.data).get("Result-Code") == 2001
        raw.send(sock, ecr().encode()[:60])  # the first 60 bytes of the message
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # ABORT (RFC 6458 §8.1.4)

    await asyncio.to_thread(aborted)
    for _ in range(100):
        if len(gateway.server.connections) == 1:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert [c.peer.info.origin_host for c in gateway.server.connections] == ["mme.other.test"]  # type: ignore[union-attr]
    lost = [r for r in caplog.records if "lost" in r.getMessage() and "mme.test" in r.getMessage()]
    assert lost and lost[0].levelno == logging.WARNING, caplog.text
    assert (await other.check(WHITE, sv="01")).get("Result-Code") == 2001
    await other.close()


async def test_association_that_never_sends_cer_is_closed(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6733 §5.6.1: no CER within the timeout, the gateway closes (SHUTDOWN) and says so."""
    caplog.set_level(logging.INFO, "diameter.transport.server")
    gateway = await start_gateway(
        EIR_DIAMETER_LISTEN="sctp://127.0.0.1:0", EIR_DIAMETER_CER_TIMEOUT_SECONDS="1"
    )
    port = sctp_port(gateway)

    def silent() -> raw.Received | None:
        sock = raw.raw_socket()
        try:
            sock.connect(("127.0.0.1", port))
            return raw.receive(sock)  # blocks until the gateway ends the association
        finally:
            sock.close()

    assert await asyncio.to_thread(silent) is None
    assert "closed" in caplog.text
    assert not gateway.server.connections  # type: ignore[union-attr]


async def test_hundred_associations_at_once(start_gateway: StartGateway) -> None:
    """100 MMEs associate together (listen backlog, accept batches), each open as its own peer,
    one check each, then DPR."""
    gateway = await start_gateway(EIR_DIAMETER_LISTEN="sctp://127.0.0.1:0")
    mmes = await asyncio.wait_for(
        asyncio.gather(*(connect(gateway, f"mme{i}.crowd.test") for i in range(100))), 120
    )
    assert len(gateway.server.open_peers) == 100  # type: ignore[union-attr]
    answers = await asyncio.gather(*(m.check(BLACK, sv="01") for m in mmes))
    assert all(a.get("Result-Code") == 2001 for a in answers)
    await asyncio.gather(*(m.close() for m in mmes))
    for _ in range(100):
        if not gateway.server.connections:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert not gateway.server.connections  # type: ignore[union-attr]


@pytest.mark.timeout(600)
def test_sigterm_under_load_sends_dpr_on_every_association(tmp_path: Path) -> None:
    """`eir-gateway run` (uvloop) on sctp:// with four MMEs' associations, each sending MICRs as
    fast as the gateway takes them. SIGTERM: a DPR with Disconnect-Cause REBOOTING on every
    association (RFC 6733 §5.4); the MME that answers with DPA is closed then, the others at
    the DPA timeout; the process exits 0. The wait is bounded so that a hang fails; how long
    it took is in the failure message, not asserted (bench/hostile.py measures it over TCP)."""
    probe = raw.raw_socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = dict(
        os.environ,
        EIR_DIAMETER_LISTEN=f"sctp://127.0.0.1:{port}",
        EIR_METRICS_LISTEN="127.0.0.1:0",
        EIR_N5G_EIR_LISTEN="http://127.0.0.1:0",
        EIR_STATE_DIRECTORY=str(tmp_path / "var"),
        EIR_DIAMETER_DPA_TIMEOUT_SECONDS="3",
        EIR_DIAMETER_MALFORMED_LIMIT="0",
    )
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run"],
            cwd=Path(__file__).resolve().parents[3], env=env, stdout=out, stderr=out,
        )  # fmt: skip
    stop = threading.Event()
    threads: list[threading.Thread] = []
    dprs: dict[str, list[int]] = {}
    try:
        deadline = time.monotonic() + 300  # Python starts slowly under emulation
        while True:
            try:
                first = raw.raw_socket()
                first.connect(("127.0.0.1", port))
                break
            except OSError:
                first.close()
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        sockets = [first] + [raw.raw_socket() for _ in range(3)]
        for n, sock in enumerate(sockets):
            host = f"mme{n}.stop.test"
            if n:
                sock.connect(("127.0.0.1", port))
            raw.send(sock, cer_as(host).encode())
            cea = raw.receive(sock)
            assert cea is not None and decode_message(cea.data).get("Result-Code") == 2001
            dprs[host] = []
            threads.append(threading.Thread(target=_flood, args=(sock, host, stop)))
            threads.append(threading.Thread(target=_read_until_shutdown, args=(sock, n == 0, dprs[host])))
        for thread in threads:
            thread.start()
        time.sleep(3.0)  # under load
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
        took = time.monotonic() - signalled
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        for thread in threads:
            thread.join(30)
    text = log.read_text()
    assert status == 0, f"exit {status} {took:.1f} s after SIGTERM\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    # One DPR on every association, REBOOTING (RFC 6733 §5.4.3).
    assert dprs == {host: [DisconnectCause.REBOOTING] for host in dprs}, (dprs, f"{took:.1f} s")
    assert "EIR gateway stopped" in text, text[-3000:]


def _as(message: Message, host: str) -> Message:
    """``message`` with Origin-Host ``host`` (one connection per peer, RFC 6733 §5.6.4)."""
    message.avps = [Avp.new("Origin-Host", host) if a.code == 264 else a for a in message.avps]
    return message


def cer_as(host: str) -> Message:
    return _as(cer(), host)


def ecr_as(host: str) -> Message:
    return _as(ecr(), host)


def _flood(sock: socket.socket, host: str, stop: threading.Event) -> None:
    """MICRs, one SCTP message each, until the gateway closes (or stops taking them)."""
    request = ecr_as(host)
    n = 0
    while not stop.is_set():
        n += 1
        request.hop_by_hop = request.end_to_end = n
        try:
            raw.send(sock, request.encode())
        except OSError:
            return


def _read_until_shutdown(sock: socket.socket, answer_dpr: bool, dprs: list[int]) -> None:
    """Every message until SHUTDOWN; a DPR is recorded (and answered with DPA if asked)."""
    while True:
        try:
            received = raw.receive(sock)
        except OSError:
            return
        if received is None:
            return
        message = decode_message(received.data)
        if message.is_request and message.command_code == DPR:
            dprs.append(message.get("Disconnect-Cause"))
            if answer_dpr:
                dpa = Message(DPR, 0, 0, message.hop_by_hop, message.end_to_end)
                dpa.add("Result-Code", 2001).add("Origin-Host", "mme0.stop.test")
                dpa.add("Origin-Realm", "test")
                with contextlib.suppress(OSError):
                    raw.send(sock, dpa.encode())
