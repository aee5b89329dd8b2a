"""Robustness of a real gateway on loopback against hostile or broken peers.

Project guide: "Every malformed input gets the RFC 6733 error answer (Failed-AVP included) or a
clean disconnect; nothing malformed may crash a connection's task or touch other peers." Each
probe here runs next to a healthy peer that keeps sending ECRs; the probe passes only when that
peer's answers keep coming (2001, within a 10 s timeout), the abusive connection is answered or closed,
and the gateway logs no "unexpected error" (the guard in PeerConnection.data_received) and no
traceback. Everything is loopback-only and bounded in count and time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diameter.codec import Avp, Message, decode_message
from gateway.config import load_config
from gateway.service import Gateway
from tests.blocking_socket import recv_message
from tests.e2e.conftest import StartGateway, gateway_env, metric_value, scrape
from tests.e2e.test_conformance_edges import DWR, ECR, R, RawPeer, base_request, cer, ecr
from tests.gateway_process import process_env

PROXY_INFO, FAILED_AVP, ORIGIN_HOST = 284, 279, 264
# The healthy peer must be answered while another peer misbehaves: a request unanswered this long
# fails the test. How fast it is answered is measured by bench/hostile.py, not asserted here.
HEALTHY_TIMEOUT = 10.0


# -- peers with their own Origin-Host (RFC 6733 §5.6.4: one connection per peer) -----------------
def cer_as(host: str) -> Message:
    message = cer()
    message.avps[0] = Avp.new("Origin-Host", host)
    return message


def ecr_as(host: str, **kwargs: object) -> Message:
    message = ecr(**kwargs)  # type: ignore[arg-type]
    message.avps = [Avp.new("Origin-Host", host) if a.code == ORIGIN_HOST else a for a in message.avps]
    return message


def dwr_as(host: str) -> Message:
    message = base_request(DWR)
    message.avps[0] = Avp.new("Origin-Host", host)
    return message


async def open_as(gateway: Gateway, host: str) -> RawPeer:
    peer = await RawPeer.connect(gateway)
    cea = await peer.ask(cer_as(host))
    assert cea.get("Result-Code") == 2001, cea
    return peer


def with_extra_avps(message: Message, extra: bytes) -> bytes:
    """``message`` encoded with raw AVP octets appended (Message Length fixed up)."""
    raw = message.encode()
    head = bytearray(raw[:20])
    head[1:4] = (len(raw) + len(extra)).to_bytes(3, "big")
    return bytes(head) + raw[20:] + extra


class Healthy:
    """A well-behaved MME sending ECRs back to back; records every answer's Result-Code."""

    def __init__(self, peer: RawPeer, host: str) -> None:
        self.peer = peer
        self.host = host
        self.codes: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _run(self) -> None:
        while not self._stopping:
            answer = await self.peer.ask(ecr_as(self.host), timeout=HEALTHY_TIMEOUT)
            self.codes.append(answer.get("Result-Code"))
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def check(self, min_answers: int = 3) -> None:
        """Still answering: a few more answers arrive, all 2001."""
        seen = len(self.codes)
        deadline = time.monotonic() + 5.0
        while len(self.codes) < seen + min_answers and time.monotonic() < deadline:
            assert self._task is not None and not self._task.done(), self._task
            await asyncio.sleep(0.02)
        assert len(self.codes) >= seen + min_answers, "healthy peer stopped getting answers"
        assert set(self.codes) == {2001}, self.codes

    async def stop(self) -> None:
        # The flag ends the loop even when a cancellation is lost: Python 3.11's wait_for (in
        # RawPeer.recv) can swallow one that races with an arriving answer.
        assert self._task is not None
        self._stopping = True
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=15.0)
        self.peer.close()
        assert self._task.done(), "the healthy peer's loop did not stop"


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    # Overload control off: these tests check fair reading and backpressure, and a starved test
    # machine would have it answer the healthy peer 3004 (test_overload.py covers it).
    return await start_gateway(
        EIR_DIAMETER_CER_TIMEOUT_SECONDS="1.0", EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS="0"
    )


@pytest.fixture
async def healthy(gateway: Gateway) -> AsyncIterator[Healthy]:
    mme = Healthy(await open_as(gateway, "healthy.test"), "healthy.test")
    mme.start()
    await mme.check(1)
    yield mme
    await mme.stop()


async def closed_within(peer: RawPeer, seconds: float) -> bool:
    """True when the gateway closes within ``seconds`` (an error answer before the close is fine:
    RFC 6733 §7.1.5 answers unframeable input with 5015 when it can, then closes)."""
    deadline = time.monotonic() + seconds
    try:
        while True:
            data = await asyncio.wait_for(peer.reader.read(65536), deadline - time.monotonic())
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def assert_clean_logs(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert "unexpected error" not in record.getMessage(), record.getMessage()
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()


# -- isolation probes ------------------------------------------------------------------------------
async def test_random_bytes_close_that_connection_only(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 6733 §2.1 / README: unframeable bytes close the connection; the other peer is untouched.
    rng = random.Random(6733)
    for _ in range(5):
        peer = await RawPeer.connect(gateway)
        peer.send(bytes([2]) + rng.randbytes(4095))  # version 2: never a Diameter header
        assert await closed_within(peer, 3.0)
        peer = await open_as(gateway, "random.test")
        peer.send(bytes([1, 0, 0, 0x15]) + rng.randbytes(4000))  # length not a multiple of 4
        assert await closed_within(peer, 3.0)
    await healthy.check()
    assert_clean_logs(caplog)


async def test_oversized_length_is_refused_at_once(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # A header declaring ~16 MB then nothing: refused from the header alone (framing limit 1 MB),
    # not buffered while waiting for bytes that never come.
    for opened in (False, True):
        peer = await (open_as(gateway, "big.test") if opened else RawPeer.connect(gateway))
        peer.send(b"\x01\xff\xff\xfc" + bytes([R]) + ECR.to_bytes(3, "big") + bytes(12))
        started = time.monotonic()
        assert await closed_within(peer, 3.0)
        assert time.monotonic() - started < 1.0
    await healthy.check()
    assert_clean_logs(caplog)


async def test_truncated_body_then_close(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # A valid header promising more than is sent, then FIN: the connection goes, nothing else.
    for i in range(10):
        peer = await open_as(gateway, f"trunc{i}.test")
        raw = ecr_as(f"trunc{i}.test").encode()
        peer.send(raw[: len(raw) - 4 * (i + 1)])
        await peer.writer.drain()
        peer.writer.close()
        await peer.writer.wait_closed()
    await asyncio.sleep(0.2)
    assert not [c for c in gateway.server.connections if c.peer and "trunc" in repr(c.peer)]
    await healthy.check()
    assert_clean_logs(caplog)


async def test_one_byte_writes_are_reassembled(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # Framing reassembles any split (RFC 6733 §2.1 stream transport): thousands of 1-byte
    # segments (TCP_NODELAY on our side) give the same answers as whole messages.
    peer = await RawPeer.connect(gateway)
    sock = peer.writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = cer_as("tiny.test").encode() + b"".join(ecr_as("tiny.test").encode() for _ in range(20))
    assert len(raw) > 3000
    for octet in raw:
        peer.writer.write(bytes([octet]))
        await peer.writer.drain()
    answers = [await peer.recv() for _ in range(21)]
    assert [a.get("Result-Code") if a else None for a in answers] == [2001] * 21
    await healthy.check()
    assert_clean_logs(caplog)


@pytest.mark.parametrize("code", [PROXY_INFO, FAILED_AVP])
async def test_deeply_nested_grouped_chain(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    # 7,000 levels of Grouped AVPs (56 kB, under diameter.max_message_size_bytes): no
    # RecursionError, an answer with our identifiers
    # (Proxy-Info is walked: past MAX_GROUPED_DEPTH it is refused with 5012 and a Failed-AVP;
    # Failed-AVP is opaque in a request (*[AVP]) and ignored), and the connection stays usable.
    data = Avp.new("Proxy-Host", "deep.test").encode()
    for _ in range(7_000):
        data = Avp(code, 0x40, 0, data).encode()
    host = f"deep{code}.test"
    peer = await open_as(gateway, host)
    request = with_extra_avps(ecr_as(host), data)
    answer = await peer.ask(request)
    assert (answer.hop_by_hop, answer.end_to_end) == struct.unpack("!II", request[12:20])
    if code == PROXY_INFO:
        # validate.MAX_GROUPED_DEPTH: 5012 with the too-deep AVP in Failed-AVP (inside its
        # parents), the Proxy-Info echoed per §6.7.4.
        assert answer.get("Result-Code") == 5012
        assert answer.find(FAILED_AVP) is not None
        assert answer.find(PROXY_INFO) is not None
    else:
        assert answer.get("Result-Code") == 2001
    assert (await peer.ask(ecr_as(host))).get("Result-Code") == 2001
    await healthy.check()
    assert_clean_logs(caplog)


async def test_pipelined_requests_meet_backpressure(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer that writes requests without reading answers: the gateway stops reading it once its
    # unsent output passes write_high_water (1 MiB), so what it buffers for that peer stays
    # bounded however much the peer pushes; other peers are still served.
    peer = await open_as(gateway, "pipe.test")
    peer.writer.transport.set_write_buffer_limits(high=1 << 30)
    burst = b"".join(ecr_as("pipe.test").encode() for _ in range(1000))
    # Push until 10 MiB wait on our side (bounded in count and time: a loaded machine pushes slower).
    deadline = time.monotonic() + 15.0
    pushed = 0
    while (
        time.monotonic() < deadline
        and pushed < 400
        and peer.writer.transport.get_write_buffer_size() <= 10 << 20
    ):
        peer.writer.write(burst)
        pushed += 1
        await asyncio.sleep(0.01)
    (connection,) = [c for c in gateway.server.connections if c.peer and "pipe.test" in repr(c.peer)]
    assert connection.transport is not None
    # The gateway holds at most ~high water of answers; the rest waits in our own socket buffer.
    assert connection.transport.get_write_buffer_size() < 4 << 20
    assert peer.writer.transport.get_write_buffer_size() > 10 << 20
    await healthy.check()
    peer.writer.transport.abort()
    assert_clean_logs(caplog)


async def test_silent_connection_closed_after_cer_timeout(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 6733 §5.6.1: a connection that sends no CER is closed after the CER timeout (1 s here).
    peers = [await RawPeer.connect(gateway) for _ in range(10)]
    started = time.monotonic()
    assert all(await asyncio.gather(*[closed_within(p, 4.0) for p in peers]))
    assert 0.8 < time.monotonic() - started < 3.0
    await healthy.check()
    assert_clean_logs(caplog)


async def test_two_hundred_connections_at_once(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # 200 simultaneous connections, each a distinct peer: every CER answered 2001, each peer
    # then answered, the healthy peer still served, all of them cleaned up after closing.
    # (Each sends its CER as soon as connected: past the listen backlog, connects wait for a
    # SYN retransmission, and the CER timeout here is 1 s.)
    peers = await asyncio.gather(*[open_as(gateway, f"many{i}.test") for i in range(200)])
    ecas = await asyncio.gather(*[p.ask(ecr_as(f"many{i}.test")) for i, p in enumerate(peers)])
    assert [a.get("Result-Code") for a in ecas] == [2001] * 200
    await healthy.check()
    for p in peers:
        p.close()
    deadline = time.monotonic() + 5.0
    while len(gateway.server.connections) > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(gateway.server.connections) == 1  # the healthy peer
    assert_clean_logs(caplog)


async def test_metrics_and_health_after_abuse(
    gateway: Gateway, healthy: Healthy, caplog: pytest.LogCaptureFixture
) -> None:
    # After framing errors, nesting and abrupt closes, /metrics and /healthz still answer and
    # count what happened.
    for _ in range(3):
        peer = await RawPeer.connect(gateway)
        peer.send(b"\x07" + bytes(100))
        assert await closed_within(peer, 3.0)
    peer = await open_as(gateway, "abuse.test")
    peer.send(ecr_as("abuse.test").encode()[:30])
    peer.writer.transport.abort()
    await healthy.check()
    status, text = await scrape(gateway)
    assert status == 200
    assert metric_value(text, "diameter_messages_total", direction="in", command="ECR", result="") > 0
    assert metric_value(text, "diameter_peers", state="R_OPEN") >= 1
    status, _ = await scrape(gateway, "/healthz")
    assert status == 200
    status, _ = await scrape(gateway, "/readyz")
    assert status == 200
    assert_clean_logs(caplog)


# -- memory of a gateway process under a pipelining peer ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def spawn_gateway(
    tmp_path: Path, **overrides: str
) -> tuple[subprocess.Popen[bytes], socket.socket, Path]:
    """`eir-gateway run` as a process on free loopback ports; returns it, a connection to its
    Diameter port (the proof it listens) and its log file."""
    port, metrics = _free_port(), _free_port()
    env = process_env(port, metrics, tmp_path / "var", **overrides)
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            return process, socket.create_connection(("127.0.0.1", port), timeout=5), log
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                process.wait()
                raise AssertionError(log.read_text()) from None
            time.sleep(0.05)


def test_process_memory_bounded_under_pipelining(tmp_path: Path) -> None:
    # `eir-gateway run` as a process: a peer pushes ~60 MB of ECRs without reading any answer;
    # backpressure keeps the gateway's resident memory within a few MB of where it started.
    process, sock, log = spawn_gateway(tmp_path)
    try:
        with sock:
            sock.sendall(cer_as("mem.test").encode())
            assert decode_message(recv_message(sock)).get("Result-Code") == 2001
            sock.sendall(ecr_as("mem.test").encode())  # warm the S13 path before the baseline
            assert decode_message(recv_message(sock)).get("Result-Code") == 2001
            baseline = _rss_kib(process.pid)
            sock.setblocking(False)
            stream = memoryview(b"".join(ecr_as("mem.test").encode() for _ in range(1000)) * 400)
            pushed = 0
            until = time.monotonic() + 3.0
            while pushed < len(stream) and time.monotonic() < until:
                try:
                    pushed += sock.send(stream[pushed : pushed + (1 << 20)])
                except BlockingIOError:
                    time.sleep(0.01)
            peak = _rss_kib(process.pid)
            # Socket buffers hold a few MB at most: the gateway must have stopped reading.
            assert pushed < 40 << 20, pushed
            assert peak - baseline < 48 * 1024, (baseline, peak)
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and "unexpected error" not in text, text[-3000:]






# -- hypothesis: mutated CER / ECR / DWR bytes ---------------------------------------------------
class ThreadedGateway:
    """A gateway in its own event loop thread, so hypothesis can drive it with blocking sockets."""

    def __init__(self, state: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = load_config(None, env=gateway_env(state, EIR_DIAMETER_CER_TIMEOUT_SECONDS="1.0"))
        self.gateway = Gateway(config)
        self.run(self.gateway.start())
        _, self.host, self.port = self.gateway.diameter_sockets[0]

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.run(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def threaded_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    gateway = ThreadedGateway(tmp_path_factory.mktemp("fuzz"))
    yield gateway
    gateway.stop()


_fuzz_ids = iter(range(1, 1 << 30))


def _read_answers(sock: socket.socket, wait: float) -> tuple[list[Message], bool]:
    """Whole messages received within ``wait`` seconds, and whether the gateway closed."""
    sock.settimeout(0.05)
    data = b""
    closed = False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if data:
                break
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    messages = []
    while len(data) >= 20:
        length = int.from_bytes(data[1:4], "big")
        assert data[0] == 1 and length >= 20 and len(data) >= length, data[:20]
        messages.append(decode_message(data[:length]))
        data = data[length:]
    assert not data, data
    return messages, closed


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["CER", "ECR", "DWR"]))
    base = {"CER": cer_as("fuzz.test"), "ECR": ecr_as("fuzz.test"), "DWR": dwr_as("fuzz.test")}
    raw = bytearray(base[kind].encode())
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "truncate", "length", "avp_length", "avp_code", "byte"]))
        if how == "flip" and raw:
            bit = draw(st.integers(0, len(raw) * 8 - 1))
            raw[bit // 8] ^= 1 << (bit % 8)
        elif how == "truncate":
            raw = raw[: draw(st.integers(0, len(raw)))]
        elif how == "length" and len(raw) >= 4:
            raw[1:4] = draw(st.integers(0, 0xFFFFFF)).to_bytes(3, "big")
        elif how in ("avp_length", "avp_code") and len(raw) > 28:
            # Walk to an AVP boundary and edit its header.
            offsets, offset = [], 20
            while offset + 8 <= len(raw):
                offsets.append(offset)
                step = int.from_bytes(raw[offset + 5 : offset + 8], "big")
                if step < 8:
                    break
                offset += (step + 3) & ~3
            at = draw(st.sampled_from(offsets))
            if how == "avp_length":
                raw[at + 5 : at + 8] = draw(st.integers(0, 0xFFFFFF)).to_bytes(3, "big")
            else:
                raw[at : at + 4] = draw(st.integers(0, 0xFFFFFFFF)).to_bytes(4, "big")
                raw[at + 4] = draw(st.integers(0, 255))
        elif how == "byte" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return kind, bytes(raw)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_fuzzed_messages_are_answered_or_closed(
    threaded_gateway: ThreadedGateway, caplog: pytest.LogCaptureFixture, case: tuple[str, bytes]
) -> None:
    # Every mutated message gets an answer carrying its Hop-by-Hop/End-to-End, or the connection
    # is closed; silence is allowed only where RFC 6733 gives nothing to answer (not a whole
    # request: unframeable, incomplete, or the R bit cleared). A healthy peer is served after.
    kind, raw = case
    host = f"fuzz{next(_fuzz_ids)}.test"
    gw = threaded_gateway
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        if kind != "CER":
            sock.sendall(cer_as(host).encode())
            assert decode_message(recv_message(sock)).get("Result-Code") == 2001
        sock.sendall(raw)
        length = int.from_bytes(raw[1:4], "big") if len(raw) >= 4 else 0
        whole_request = (
            len(raw) >= 20 and raw[0] == 1 and length == len(raw) and not length & 3
            and raw[4] & R
        )
        answers, closed = _read_answers(sock, 3.0 if whole_request else 0.3)
        if whole_request:
            assert answers or closed, "a whole request got neither an answer nor a close"
        if answers:
            ids = struct.unpack("!II", raw[12:20])
            assert any((a.hop_by_hop, a.end_to_end) == ids for a in answers), (answers, ids)
            assert all(not a.is_request or a.command_code == DWR for a in answers), answers
    healthy_host = f"healthy{next(_fuzz_ids)}.test"
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        sock.sendall(cer_as(healthy_host).encode())
        assert decode_message(recv_message(sock)).get("Result-Code") == 2001
        sock.sendall(ecr_as(healthy_host).encode())
        assert decode_message(recv_message(sock)).get("Result-Code") == 2001
    assert_clean_logs(caplog)


UNKNOWN_OPTIONAL = struct.pack("!II", 99999, 8)  # unknown AVP, M bit clear, no data: ignored


async def test_large_avp_lists_are_answered_and_not_learnt(start_gateway: StartGateway) -> None:
    # Each new AVP count is a new shape. Learning one wrote out a checker AVP by AVP (seconds of
    # exec with the event loop blocked for every peer, ~160 B per AVP kept, up to 256 shapes per
    # grammar): lists longer than validate.MAX_LEARNED_AVPS take the full walk and are not kept
    # (diameter.max_avps raised: by default 256 AVPs at most reach the walk).
    from diameter import validate

    gateway = await start_gateway(EIR_DIAMETER_MAX_AVPS="4096")
    peer = await open_as(gateway, "shapes.test")
    before = sum(len(c[6]) for c in _compiled_grammars(validate))
    for n in range(2000, 2010):
        request = with_extra_avps(ecr_as("shapes.test"), UNKNOWN_OPTIONAL * n)
        assert (await peer.ask(request, timeout=30)).get("Result-Code") == 2001
    after = sum(len(c[6]) for c in _compiled_grammars(validate))
    assert after - before == 0, f"{after - before} checkers of 2000+ AVPs each retained"


def _compiled_grammars(validate: object) -> list[tuple]:  # type: ignore[type-arg]
    return [entry[3] for entry in validate._compiled.values()]  # type: ignore[attr-defined]
