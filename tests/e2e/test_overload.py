"""Overload control, DOIC and abusive peers against a real gateway over loopback sockets.

No timings are asserted: waits are bounded only so that a hang fails instead of stalling.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.base_rfc6733 import DisconnectCause
from diameter.dictionary.rfc7683_doic import OLR_DEFAULT_ALGO
from tests.blocking_socket import recv_message
from tests.e2e.conftest import StartGateway, connect_mme, metric_value, scrape
from tests.e2e.test_conformance_edges import DPR, RawPeer
from tests.e2e.test_robustness import (
    cer_as,
    dwr_as,
    ecr_as,
    open_as,
    spawn_gateway,
    with_extra_avps,
)
from tests.simulator.test_doic import hold_overload


def with_oc_supported_features(message: Message) -> Message:
    message.avps.append(
        Avp.new("OC-Supported-Features", [Avp.new("OC-Feature-Vector", OLR_DEFAULT_ALGO)])
    )
    return message


def malformed_ecr(host: str, n: int) -> Message:
    message = ecr_as(host)
    message.hop_by_hop = message.end_to_end = n
    message.avps = [a for a in message.avps if a.code != 283]  # no Destination-Realm: 5005
    return message


# A 1 ms target delay, measured every 10 ms (see test_a_real_backlog_turns_overload_control_on).
BURST_SETTINGS = {
    "EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS": "0.001",
    "EIR_DIAMETER_OVERLOAD_INTERVAL_SECONDS": "0.01",
}


def pipelined(host: str, total: int) -> bytes:
    """``total`` ECRs of ``host`` (identifiers 0, 1, ...), to be sent at once."""
    template = ecr_as(host)
    data = bytearray()
    for i in range(total):
        template.hop_by_hop = template.end_to_end = i
        data += template.encode()
    return bytes(data)


async def result_codes(peer: RawPeer, total: int) -> dict[int, int]:
    """How many of the next ``total`` answers carried each Result-Code."""
    codes: dict[int, int] = {}
    for _ in range(total):
        answer = await peer.recv(timeout=60)
        assert answer is not None
        code = answer.get("Result-Code")
        codes[code] = codes.get(code, 0) + 1
    return codes


async def test_doic_answers_only_to_peers_that_ask(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        plain = await mme.check("35693803564380", sv="01")
        assert plain.get("Result-Code") == 2001
        assert plain.find(621) is None and plain.find(623) is None
        asking = await mme.send(with_oc_supported_features(mme.micr("35693803564380", sv="01")))
        assert asking.get("Result-Code") == 2001
        features = asking.find(621)
        assert features is not None and features.find(622).value == OLR_DEFAULT_ALGO  # type: ignore[union-attr]
        assert asking.find(623) is None  # not overloaded: no report
    finally:
        await mme.close()


async def test_overloaded_gateway_answers_3004_and_reports_to_doic_peers(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    hold_overload(gateway, 100)
    mme = await connect_mme(gateway)
    try:
        plain = await mme.check("35693803564380", sv="01")
        assert plain.get("Result-Code") == 3004 and plain.is_error
        assert plain.find(621) is None and plain.find(623) is None
        asking = await mme.send(with_oc_supported_features(mme.micr("35693803564380", sv="01")))
        assert asking.get("Result-Code") == 3004
        olr = asking.find(623)
        assert olr is not None
        assert olr.find(627).value == 100  # type: ignore[union-attr]
        assert olr.find(625).value == 30  # type: ignore[union-attr]
    finally:
        await mme.close()
    # Capabilities exchange and watchdog are never refused.
    raw = await open_as(gateway, "dw.test")
    assert (await raw.ask(dwr_as("dw.test"))).get("Result-Code") == 2001
    _, text = await scrape(gateway)
    assert metric_value(text, "diameter_overload_state") == 1
    assert metric_value(text, "diameter_overload_reduction_percent") == 100
    assert metric_value(text, "diameter_overload_rejected_total") == 2
    assert metric_value(text, "diameter_messages_total", direction="out", command="ECA", result="3004") == 2


async def test_a_real_backlog_turns_overload_control_on(start_gateway: StartGateway) -> None:
    # 20,000 requests pipelined at once, a 1 ms target: the backlog measured (unread octets over
    # the handling rate) exceeds it, so part of the requests get 3004; every one is answered.
    # Measured every 10 ms: the gateway drains the burst in ~150 ms, which a 100 ms interval
    # could see only once (shedding needs two measurements past the target).
    # The answers' write buffer holds them all: this test's client, decoding each answer in the
    # gateway's own process, may read them slower than the gateway answers, and a connection
    # whose answers back up is paused, its wait its own (not an overload of the node).
    gateway = await start_gateway(
        **BURST_SETTINGS, EIR_DIAMETER_WRITE_HIGH_WATER_BYTES=str(16 << 20)
    )
    peer = await open_as(gateway, "burst.test")
    total = 20_000
    peer.send(pipelined("burst.test", total))
    codes = await result_codes(peer, total)
    assert set(codes) <= {2001, 3004}, codes
    assert codes.get(3004, 0) > 0, codes
    _, text = await scrape(gateway)
    assert metric_value(text, "diameter_overload_rejected_total") == codes[3004]


async def test_a_modest_peer_is_answered_while_a_flooding_one_is_refused(
    start_gateway: StartGateway,
) -> None:
    # Two peers over real sockets: one pipelines 20,000 requests at once, the other sends one
    # at a time. The flood's backlog turns overload control on (1 ms target); its share is
    # refused, while the modest peer, far within its fair share, is never refused.
    gateway = await start_gateway(**BURST_SETTINGS)
    modest = await open_as(gateway, "modest.test")
    flood = await open_as(gateway, "flood.test")
    total = 20_000
    data = pipelined("flood.test", total)
    done = asyncio.Event()
    modest_codes: list[int] = []

    async def modest_loop() -> None:
        n = 0
        while not done.is_set():
            n += 1
            request = ecr_as("modest.test")
            request.hop_by_hop = request.end_to_end = n
            modest_codes.append((await modest.ask(request, timeout=60)).get("Result-Code"))
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(modest_loop())
    await asyncio.sleep(0.05)
    flood.send(data)
    codes = await result_codes(flood, total)
    done.set()
    await asyncio.wait_for(task, 70)
    assert set(codes) <= {2001, 3004} and codes.get(3004, 0) > 0, codes
    assert modest_codes and set(modest_codes) == {2001}, (len(modest_codes), codes)
    _, text = await scrape(gateway)
    assert metric_value(text, "diameter_overload_rejected_total") == codes[3004]


async def test_shedding_after_stalls_ends_once_the_delay_is_back_under_the_target(
    start_gateway: StartGateway,
) -> None:
    # Real stalls of the event loop (time.sleep on it, as a long collection or a writer thread
    # holding the core would) while a peer sends steadily from a thread. Overload control
    # sheds while requests wait past the target, and not once a measurement finds the delay
    # back under it: no slow step-down, so a stall costs no refusals after it is over. (This
    # peer alone offers far less than the gateway handles, so it is within its fair share
    # and refused nothing at all: bench/overload.py --stall counts what several peers get.)
    gateway = await start_gateway()
    loop = asyncio.get_running_loop()
    control = gateway.node.overload  # type: ignore[union-attr]
    target = control.settings.target_delay
    _, host, port = gateway.diameter_sockets[0]
    seen: list[tuple[float, int]] = []  # (delay, reduction) after each measurement
    finished = threading.Event()
    codes: list[int] = []
    total = 4_000

    def record() -> None:
        if not seen or seen[-1] != (control.delay, control.reduction):
            seen.append((control.delay, control.reduction))
        if not finished.is_set():
            loop.call_later(0.005, record)

    def client() -> None:
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(cer_as("steady.test").encode())
            assert decode_message(recv_message(sock)).get("Result-Code") == 2001

            def read() -> None:
                while len(codes) < total:
                    codes.append(decode_message(recv_message(sock)).get("Result-Code"))

            reader = threading.Thread(target=read)
            reader.start()
            request = ecr_as("steady.test")
            for n in range(total):  # about 2,000/s for two seconds
                request.hop_by_hop = request.end_to_end = n + 1
                sock.sendall(request.encode())
                time.sleep(0.0005)
            reader.join(60)
        finished.set()

    def stall(left: int) -> None:
        time.sleep(0.25)
        if left > 1:
            loop.call_later(0.03, stall, left - 1)

    record()
    thread = threading.Thread(target=client)
    thread.start()
    loop.call_later(0.3, stall, 4)
    while not finished.is_set():
        await asyncio.sleep(0.05)
    thread.join(10)
    assert len(codes) == total and set(codes) <= {2001, 3004}
    assert any(reduction for _, reduction in seen), seen  # the stalls did make it shed
    # The current delay decides: under the target, nothing is refused.
    assert all(reduction == 0 for delay, reduction in seen if delay <= target), seen
    assert seen[-1][1] == 0, seen


async def test_malformed_peer_is_disconnected_then_may_come_back(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(EIR_DIAMETER_MALFORMED_LIMIT="5")
    healthy = await open_as(gateway, "good.test")
    peer = await open_as(gateway, "bad.test")
    for i in range(6):
        peer.send(malformed_ecr("bad.test", i))
    codes = []
    dpr = None
    while dpr is None:
        message = await peer.recv(timeout=10)
        assert message is not None
        if message.is_request:
            dpr = message
        else:
            codes.append(message.get("Result-Code"))
    assert codes == [5005] * 6  # every malformed request got its error first
    assert dpr.command_code == DPR
    assert dpr.get("Disconnect-Cause") == DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
    # Our DPA; the gateway then closes (RFC 6733 §5.4).
    dpa = Message(DPR, 0, 0, dpr.hop_by_hop, dpr.end_to_end)
    dpa.add("Result-Code", 2001).add("Origin-Host", "bad.test").add("Origin-Realm", "test")
    peer.send(dpa)
    assert await peer.closed_within(10)
    # The healthy peer was not touched; the bad one may connect again and is served.
    assert (await healthy.ask(ecr_as("good.test"))).get("Result-Code") == 2001
    again = await open_as(gateway, "bad.test")
    assert (await again.ask(ecr_as("bad.test"))).get("Result-Code") == 2001
    _, text = await scrape(gateway)
    assert metric_value(text, "diameter_malformed_disconnects_total") == 1


def test_sigterm_is_honoured_while_peers_flood(tmp_path: Path) -> None:
    # `eir-gateway run` as a process; two admitted peers pipeline malformed and well-formed
    # requests without reading answers, a third reads and never answers our DPR. SIGTERM must
    # end the process, status 0, after a DPR to each peer and a clean stop; the connections
    # whose DPA never comes are closed at the DPA timeout. The wait is bounded so a hang fails
    # the test; no duration is asserted (bench/hostile.py measures it).
    process, first, log = spawn_gateway(
        tmp_path, EIR_DIAMETER_DPA_TIMEOUT_SECONDS="1.0", EIR_DIAMETER_MALFORMED_LIMIT="0"
    )
    port = first.getpeername()[1]
    first.close()
    stop = threading.Event()
    flooders: list[threading.Thread] = []
    received: list[Message] = []
    try:
        def flood(host: str) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(cer_as(host).encode())
                recv_message(sock)
                batch = b"".join(
                    (malformed_ecr(host, i) if i % 2 else ecr_as(host)).encode() for i in range(500)
                )
                sock.settimeout(0.5)
                sent = 0
                while not stop.is_set() and sent < 200:  # at most 100,000 requests
                    try:
                        sock.sendall(batch)
                        sent += 1
                    except TimeoutError:
                        continue  # the gateway reads no faster: keep it loaded
                    except OSError:
                        return  # closed by the gateway (stopping)

        watcher = socket.create_connection(("127.0.0.1", port), timeout=30)
        watcher.sendall(cer_as("watcher.test").encode())
        assert decode_message(recv_message(watcher)).get("Result-Code") == 2001

        def watch() -> None:  # every message until the gateway closes (DWRs unanswered too)
            with contextlib.suppress(OSError, ConnectionError):
                while True:
                    received.append(decode_message(recv_message(watcher)))

        flooders = [threading.Thread(target=flood, args=(f"flood{i}.test",)) for i in range(2)]
        flooders.append(threading.Thread(target=watch))
        for thread in flooders:
            thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
        assert status == 0, log.read_text()[-3000:]
    finally:
        stop.set()
        for thread in flooders:
            thread.join(10)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    dprs = [m for m in received if m.command_code == DPR and m.is_request]
    assert len(dprs) == 1 and dprs[0].get("Disconnect-Cause") == DisconnectCause.REBOOTING
    assert "watcher.test Closed> closed: stopped" in text, text[-3000:]  # by us, unanswered
    assert "EIR gateway stopped" in text  # the whole stop ran: observation log, registry, stores


async def test_messages_past_the_size_limit_are_refused_and_closed(
    start_gateway: StartGateway,
) -> None:
    # 64 KiB by default: every message's work (proportional to its AVPs) stays bounded.
    gateway = await start_gateway()
    unknown = struct.pack("!II", 99999, 8 + 1016) + bytes(1016)  # unknown, not mandatory: ignored
    peer = await open_as(gateway, "big.test")
    fits = with_extra_avps(ecr_as("big.test"), unknown * 55)  # ~56 KiB
    assert (await peer.ask(fits)).get("Result-Code") == 2001
    too_big = with_extra_avps(ecr_as("big.test"), unknown * 65)  # ~66 KiB
    answer = await peer.ask(too_big)
    assert answer.get("Result-Code") == 5015
    assert await peer.closed_within(10)


async def test_more_avps_than_the_limit_get_5009_and_the_connection_stays(
    start_gateway: StartGateway,
) -> None:
    # diameter.max_avps (256 by default): 5009 with the first AVP past it; the peer is served on.
    gateway = await start_gateway(EIR_DIAMETER_MAX_AVPS="64")
    peer = await open_as(gateway, "many.test")
    request = ecr_as("many.test")
    room = 64 - len(request.avps)
    extra = [struct.pack("!II", 99000 + n, 12) + n.to_bytes(4, "big") for n in range(room + 1)]
    assert (await peer.ask(with_extra_avps(request, b"".join(extra[:room])))).get(
        "Result-Code"
    ) == 2001
    answer = await peer.ask(with_extra_avps(ecr_as("many.test"), b"".join(extra)))
    assert answer.get("Result-Code") == 5009
    failed = answer.find(279)  # Failed-AVP: the 65th AVP
    assert failed is not None and failed.children[0].encode() == extra[room]
    assert (await peer.ask(ecr_as("many.test"))).get("Result-Code") == 2001
