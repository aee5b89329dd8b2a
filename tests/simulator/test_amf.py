"""Simulated AMFs (``--interface n5g-eir``): PEIs from checks, the HTTP/2 client session against
this project's server session and the ``h2`` library's, and runs over loopback against the live
gateway (h2c, TLS with ALPN h2, a gateway stopping mid-run) and against nghttpd (nghttp2's
server, an independent HTTP/2 implementation)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.n5g_eir.frames import END_HEADERS, ErrorCode, FrameType, frame
from gateway.n5g_eir.http2 import Http2Session
from gateway.n5g_eir.http2_client import (
    ConnectionTerminated,
    Http2ClientSession,
    ResponseReceived,
    StreamReset,
    request_block,
)
from gateway.n5g_eir.problem import STATUS_RESPONSES
from gateway.n5g_eir.settings import N5gEirSettings
from gateway.policy import EquipmentStatus
from gateway.service import Gateway
from gateway.simulator.amf import expected_of, outcome_of_response, pei_of, query_of
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.traffic import Check, GatewayData, ImeiGenerator
from tests.diameter.test_transport_tls import OPENSSL, _self_signed

ROOT = Path(__file__).resolve().parents[2]
NGHTTPD = shutil.which("nghttpd")
WHITELISTED = STATUS_RESPONSES[EquipmentStatus.WHITELISTED]


# --- checks -> PEIs -----------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "pei", "expected"), [
    (Check("35693803564380", expected="BLACKLISTED"), "imei-356938035643809", "BLACKLISTED"),
    (Check("356938035643809", sv="07"), "imeisv-3569380356438007", None),
    (Check("35693803564380", sv="07"), "imeisv-3569380356438007", None),
    # A wrong Luhn digit stays, even with a Software-Version: S13 would see it too.
    (Check("356938035643801", sv="07", expected="BLACKLISTED"), "imei-356938035643801",
     "BLACKLISTED"),
    (Check("mac-00-11-22-33-44-55", expected="EQUIPMENT_UNKNOWN"), "mac-00-11-22-33-44-55",
     "EQUIPMENT_UNKNOWN"),
    (Check("12345", expected="BLACKLISTED"), "imei-12345", "HTTP_400"),
    (Check("35693803564380AB", expected="BLACKLISTED"), "imei-35693803564380AB", "HTTP_400"),
])
def test_pei_and_expectation(check: Check, pei: str, expected: str | None) -> None:
    assert pei_of(check) == pei
    assert expected_of(check) == expected


def test_query_percent_encodes_and_carries_the_supi() -> None:
    assert query_of(Check("35693803564380", imsi="001010000000001")) == (
        "/n5g-eir-eic/v1/equipment-status?pei=imei-356938035643809&supi=imsi-001010000000001")
    assert query_of(Check("1 2&x")).endswith("?pei=imei-1%202%26x")


def test_outcomes_of_responses() -> None:
    assert outcome_of_response(200, b'{"status":"GREYLISTED"}') == ("200", "GREYLISTED")
    assert outcome_of_response(200, b'{"status":"PERMITTED"}') == ("200", "HTTP_200")
    assert outcome_of_response(404, b'{"cause":"ERROR_EQUIPMENT_UNKNOWN"}') == (
        "404 ERROR_EQUIPMENT_UNKNOWN", "EQUIPMENT_UNKNOWN")
    # A 404 without the cause is not a verdict (AMFs treat it as a failure).
    assert outcome_of_response(404, b"{}") == ("404", "HTTP_404")
    assert outcome_of_response(503, b"not json") == ("503", "HTTP_503")


# --- the client session, sans-IO ----------------------------------------------------------------

BLOCK = request_block(b"GET", b"http", b"eir:8080",
                      b"/n5g-eir-eic/v1/equipment-status?pei=imei-356938035643809")


def _exchange(client: Http2ClientSession, server: Http2Session) -> list[object]:
    """Pass bytes both ways until quiet; the server answers every request WHITELISTED."""
    events: list[object] = []
    for _ in range(50):
        to_server = client.data_to_send()
        for request in server.receive(to_server):
            server.respond(request.stream_id, WHITELISTED)
        to_client = server.data_to_send()
        if not to_server and not to_client:
            return events
        events += client.receive(to_client)
    raise AssertionError("no quiet")


def test_requests_beyond_the_servers_stream_limit_wait_their_turn() -> None:
    server = Http2Session(N5gEirSettings(max_concurrent_streams=2))
    server.initiate()
    client = Http2ClientSession()
    client.initiate()
    # The client's preface first (§3.4): the server's SETTINGS wait for it.
    assert server.receive(client.data_to_send()) == []
    client.receive(server.data_to_send())
    assert client.settings_received and client.max_concurrent_streams == 2
    ids = [client.request(BLOCK) for _ in range(7)]
    assert ids == [1, 3, 5, 7, 9, 11, 13]
    assert client.open_streams == 2
    events = _exchange(client, server)
    # Never refused: each waited for a stream to close; answered in stream order.
    assert [e.stream_id for e in events if isinstance(e, ResponseReceived)] == ids
    assert all(e == ResponseReceived(e.stream_id, 200, b"application/json", WHITELISTED.body)
               for e in events)


def test_goaway_refuses_the_streams_above_its_last() -> None:
    server = Http2Session(N5gEirSettings())
    server.initiate()
    client = Http2ClientSession()
    client.initiate()
    assert server.receive(client.data_to_send()) == []  # the client's preface first
    client.receive(server.data_to_send())
    first = client.request(BLOCK)
    server.receive(client.data_to_send())  # stream 1 reached the server, not answered yet
    second = client.request(BLOCK)
    server.shutdown()  # GOAWAY NO_ERROR, last stream 1
    server.respond(first, WHITELISTED)
    events = client.receive(server.data_to_send())
    assert events[0] == ConnectionTerminated(0, 1, "GOAWAY NO_ERROR", by_peer=True)
    assert StreamReset(second, ErrorCode.REFUSED_STREAM) in events
    with pytest.raises(ConnectionError):
        client.request(BLOCK)


def test_ping_acknowledged_and_push_promise_a_protocol_error() -> None:
    server = Http2Session(N5gEirSettings())
    server.initiate()
    client = Http2ClientSession()
    client.initiate()
    assert server.receive(client.data_to_send()) == []  # the client's preface first
    client.receive(server.data_to_send())
    client.data_to_send()
    client.receive(frame(FrameType.PING, 0, 0, b"12345678"))
    assert client.data_to_send() == frame(FrameType.PING, 1, 0, b"12345678")
    events = client.receive(frame(FrameType.PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2"))
    assert isinstance(events[0], ConnectionTerminated) and not events[0].by_peer
    assert events[0].error_code == ErrorCode.PROTOCOL_ERROR and client.closed
    assert client.data_to_send()[3] == FrameType.GOAWAY


def test_responses_of_the_h2_library_with_its_dynamic_table() -> None:
    """The ``h2`` library's server indexes response fields in the HPACK dynamic table (RFC
    7541 §6.2.1); the client decodes them across responses, bodies split over two DATA
    frames."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import RequestReceived

    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    client = Http2ClientSession()
    client.initiate()
    bodies = [b'{"status":"BLACKLISTED"}', b'{"cause":"ERROR_EQUIPMENT_UNKNOWN"}']
    events: list[object] = []
    streams = [client.request(BLOCK) for _ in range(4)]
    for _ in range(10):
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, RequestReceived):
                n = event.stream_id // 2 % 2
                status = b"200" if n == 0 else b"404"
                server.send_headers(event.stream_id, [
                    (b":status", status), (b"content-type", b"application/json"),
                    (b"server", b"h2-test-peer"), (b"x-request", str(event.stream_id).encode())])
                server.send_data(event.stream_id, bodies[n][:5])
                server.send_data(event.stream_id, bodies[n][5:], end_stream=True)
        events += client.receive(server.data_to_send())
    responses = {e.stream_id: e for e in events if isinstance(e, ResponseReceived)}
    assert sorted(responses) == streams
    for stream_id, response in responses.items():
        n = stream_id // 2 % 2
        assert response.status == (200, 404)[n] and response.body == bodies[n]
        assert response.content_type == b"application/json"


# --- runs against the live gateway --------------------------------------------------------------

def _checks(n: int, seed: int = 1) -> list[Check]:
    config = load_config()
    mix = {"valid": 70, "bad_check_digit": 5, "unknown_tac": 10, "listed": 10, "malformed": 5}
    generator = ImeiGenerator(GatewayData.from_config(config), config.policy, mix, imsi=True,
                              sv="01", seed=seed)
    return generator.take(n)


def _n5g_port(gateway: Gateway, scheme: str = "http") -> int:
    return next(p for s, _, p in gateway.n5g_eir_sockets if s == scheme)


@pytest.mark.parametrize(("connections", "window"), [(1, 1), (3, 24)])
async def test_closed_loop_against_the_gateway_every_answer_verified(
    gateway: Gateway, connections: int, window: int
) -> None:
    checks = _checks(300)
    settings = SimulatorSettings(interface="n5g-eir", port=_n5g_port(gateway),
                                 connections=connections, window=window, count=600,
                                 max_duration=60.0)
    report, captures = await simulate(settings, checks)
    assert captures == []
    assert report.ok, report.render_text()
    d = report.to_dict()
    assert d["sent"] == d["answered"] == 600 and report.connections_up == connections
    assert d["method"]["interface"] == "n5g-eir" and d["method"]["transport"] == "h2c"
    sent = [checks[i % len(checks)] for i in range(600)]
    expected = Counter(expected_of(c) for c in sent)
    assert d["outcomes"] == dict(sorted(expected.items()))
    # Malformed IMEIs: 400 MANDATORY_QUERY_PARAM_INCORRECT, expected, not counted as answers.
    assert d["results"]["400 MANDATORY_QUERY_PARAM_INCORRECT"] == expected["HTTP_400"] > 0
    assert d["errors"] == expected["HTTP_400"]
    assert {"WHITELISTED", "BLACKLISTED", "GREYLISTED"} <= set(d["equipment_status"])
    assert d["verification"]["verified"] == 600 and d["verification"]["mismatches"] == 0
    text = report.render_text()
    assert "HTTP status (cause): 200:" in text and "EquipmentStatus:" in text


async def test_open_loop_against_the_gateway(gateway: Gateway) -> None:
    settings = SimulatorSettings(interface="n5g-eir", port=_n5g_port(gateway), mode="open",
                                 rate=400.0, count=200, connections=2, max_duration=60.0)
    report, _ = await simulate(settings, _checks(100, seed=2))
    assert report.ok, report.render_text()
    d = report.to_dict()
    assert d["sent"] == 200 and "send_lag_ms" in d
    assert d["method"]["rate"] == 400.0 and d["method"]["window"] is None


async def test_gateway_stopping_mid_run_is_reported_as_cut_short(gateway: Gateway) -> None:
    settings = SimulatorSettings(interface="n5g-eir", port=_n5g_port(gateway), mode="open",
                                 rate=200.0, duration=30.0, max_duration=60.0, timeout=2.0)
    run = asyncio.ensure_future(simulate(settings, _checks(50)))
    await asyncio.sleep(0.5)
    await gateway.stop()  # GOAWAY NO_ERROR, then close
    report, _ = await asyncio.wait_for(run, 30)
    assert not report.ok and report.cut_short, report.render_text()
    assert "the EIR sent GOAWAY NO_ERROR" in report.cut_short[0]
    assert report.stats.answered > 0


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    if OPENSSL is None:
        pytest.skip("needs the openssl CLI to make a test certificate")
    return _self_signed(tmp_path, "localhost", "DNS:localhost,IP:127.0.0.1")


async def test_tls_with_alpn_h2(tmp_path: Path, tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    config = load_config(env={
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:0", "EIR_METRICS_LISTEN": "127.0.0.1:0",
        "EIR_N5G_EIR_LISTEN": "https://127.0.0.1:0", "EIR_N5G_EIR_TLS_CERT": cert,
        "EIR_N5G_EIR_TLS_KEY": key, "EIR_STATE_DIRECTORY": str(tmp_path / "state"),
    })
    gateway = Gateway(config)
    await gateway.start()
    try:
        settings = SimulatorSettings(interface="n5g-eir", transport="tls",
                                     port=_n5g_port(gateway, "https"), tls_ca=cert,
                                     tls_server_name="localhost", connections=2, count=200,
                                     max_duration=60.0)
        report, _ = await simulate(settings, _checks(100, seed=3))
        assert report.ok, report.render_text()
        assert report.to_dict()["method"]["transport"] == "h2"
        assert report.to_dict()["method"]["target"].startswith("https://")
        # Without the CA the certificate is refused: no run.
        with pytest.raises(OSError):
            await simulate(SimulatorSettings(interface="n5g-eir", transport="tls",
                                             port=settings.port, count=1), _checks(1))
    finally:
        await gateway.stop()


def test_settings_refuse_what_n5g_eir_cannot_do() -> None:
    for bad in ({"transport": "sctp"}, {"doic": True}, {"capture": True}):
        with pytest.raises(ValueError):
            SimulatorSettings(interface="n5g-eir", count=1, **bad).validate()  # type: ignore[arg-type]


# --- an independent server: nghttpd -------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nghttpd(tmp_path: Path) -> Iterator[int]:
    """nghttpd (Debian nghttp2-server) serving a static EirResponseData on a free port."""
    if NGHTTPD is None:
        pytest.skip("needs nghttpd (Debian package nghttp2-server)")
    root = tmp_path / "htdocs" / "n5g-eir-eic" / "v1"
    root.mkdir(parents=True)
    (root / "equipment-status").write_bytes(WHITELISTED.body)
    port = _free_port()
    process = subprocess.Popen([NGHTTPD, "--no-tls", "-d", str(tmp_path / "htdocs"),
                                "--address=127.0.0.1", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                pytest.skip("nghttpd did not start")
            subprocess.run(["sleep", "0.05"], check=True)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_against_nghttpd(nghttpd: int) -> None:
    checks = [Check(c.imei, c.imsi, c.sv, "WHITELISTED", c.category) for c in _checks(100)
              if c.category != "malformed"]
    settings = SimulatorSettings(interface="n5g-eir", port=nghttpd, connections=2, window=20,
                                 count=2000, max_duration=60.0)
    report, _ = await simulate(settings, checks)
    assert report.ok, report.render_text()
    assert report.to_dict()["results"] == {"200": 2000}


# --- the command line ---------------------------------------------------------------------------

def test_command_line_n5g_eir_with_an_imei_file(tmp_path: Path) -> None:
    """``eir-gateway simulate --interface n5g-eir`` against a gateway process on free ports;
    a wrong expectation in the file fails the run (exit 1) and is named with its line."""
    state = tmp_path / "state"
    ports = {name: _free_port() for name in ("s13", "n5g", "metrics")}
    env = {
        "EIR_DIAMETER_LISTEN": f"tcp://127.0.0.1:{ports['s13']}",
        "EIR_N5G_EIR_LISTEN": f"http://127.0.0.1:{ports['n5g']}",
        "EIR_METRICS_LISTEN": f"127.0.0.1:{ports['metrics']}",
        "EIR_STATE_DIRECTORY": str(state),
        "PYTHONPATH": str(ROOT),
    }
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"],
                              env=os.environ | env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", ports["n5g"])) == 0:
                    break
            assert server.poll() is None, "the gateway exited"
            subprocess.run(["sleep", "0.05"], check=True)
        good = tmp_path / "good.csv"
        good.write_text("imei,imsi,sv,expected\n35693803564380,001010000000001,01,BLACKLISTED\n"
                        "mac-00-11-22-33-44-55,,,EQUIPMENT_UNKNOWN\n")
        command = [sys.executable, "-m", "gateway.cli", "simulate", "--interface", "n5g-eir",
                   "--port", str(ports["n5g"]), "--count", "10", "--json"]
        done = subprocess.run([*command, "--imei-file", str(good)], env=os.environ | env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] and report["outcomes"] == {"BLACKLISTED": 5, "EQUIPMENT_UNKNOWN": 5}
        bad = tmp_path / "bad.csv"
        bad.write_text("35693803564380,,,WHITELISTED\n")
        done = subprocess.run([*command[:-1], "--imei-file", str(bad)], env=os.environ | env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "mismatch: line 1: IMEI 35693803564380 expected WHITELISTED got BLACKLISTED" \
            in done.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2_000), max_size=12))
def test_responses_split_at_any_byte_are_read_as_whole(cuts: list[int]) -> None:
    """The client reads frames cut anywhere by the transport as the server wrote them."""
    server = Http2Session(N5gEirSettings())
    server.initiate()
    client = Http2ClientSession()
    client.initiate()
    assert server.receive(client.data_to_send()) == []  # the client's preface first
    client.receive(server.data_to_send())
    ids = [client.request(BLOCK) for _ in range(6)]
    for request in server.receive(client.data_to_send()):
        server.respond(request.stream_id, WHITELISTED)
    wire = server.data_to_send()
    events: list[object] = []
    start = 0
    for cut in [*sorted({c % len(wire) for c in cuts}), len(wire)]:
        events += client.receive(wire[start:cut])
        start = cut
    assert events == [ResponseReceived(i, 200, b"application/json", WHITELISTED.body)
                      for i in ids]
