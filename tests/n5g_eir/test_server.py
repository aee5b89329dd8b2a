"""N5g-eir end to end: the gateway on loopback, AMF-side HTTP/2 clients (httpx with h2, curl
--http2-prior-knowledge, h2load), h2c and TLS with ALPN h2, S13 and N5g-eir side by side.

Expected statuses follow the embedded default config, as in tests/e2e/test_s13.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl

import httpx
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, StreamEnded
from hyperframe.frame import ContinuationFrame, HeadersFrame

from gateway.imei import luhn_check_digit
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from gateway.n5g_eir.server import N5gEirServer
from gateway.n5g_eir.settings import HttpEndpoint, N5gEirSettings
from gateway.service import Gateway
from tests.diameter.test_transport_tls import OPENSSL, _self_signed
from tests.e2e.conftest import StartGateway, connect_mme, metric_value, scrape
from tests.e2e.test_s13 import CASES, status_of

CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
NGHTTP = shutil.which("nghttp")
IMSI = "001010123456789"
STATUS_NAMES = {0: "WHITELISTED", 1: "BLACKLISTED", 2: "GREYLISTED"}


def base_url(gateway: Gateway, scheme: str = "http") -> str:
    found = [(s, h, p) for s, h, p in gateway.n5g_eir_sockets if s == scheme]
    _, host, port = found[0]
    return f"{scheme}://{host}:{port}"


def h2c_client(gateway: Gateway) -> httpx.AsyncClient:
    # http1=False: HTTP/2 with prior knowledge on http://, as the Open5GS and free5GC AMFs do.
    return httpx.AsyncClient(http1=False, http2=True, base_url=base_url(gateway), timeout=10)


def pei_for(imei: str) -> str | None:
    """The PEI an AMF would send for the IMEI an MME sends on S13 (None: not expressible)."""
    if not imei.isdigit():
        return None
    if len(imei) == 14:
        return f"imei-{imei}{luhn_check_digit(imei)}"
    if len(imei) == 15:
        return f"imei-{imei}"
    if len(imei) == 16:
        return f"imeisv-{imei}"
    return None


async def test_same_answers_as_s13_over_the_wire(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    compared = 0
    try:
        async with h2c_client(gateway) as amf:
            for imei, _, status, reason in CASES:
                pei = pei_for(imei)
                if pei is None:
                    continue  # malformed IMEIs: S13 classifies them, N5g-eir answers 400
                s13 = status_of(await mme.check(imei, imsi=IMSI))
                response = await amf.get(EQUIPMENT_STATUS_PATH,
                                         params={"pei": pei, "supi": f"imsi-{IMSI}"})
                assert response.http_version == "HTTP/2"
                assert response.status_code == 200, response.text
                assert response.headers["content-type"] == "application/json"
                assert response.json() == {"status": STATUS_NAMES[status]}, reason
                assert s13 == status
                compared += 1
    finally:
        await mme.close()
    assert compared >= 12
    _, text = await scrape(gateway)
    assert metric_value(text, "eir_checks_total", interface="n5g_eir", status="blacklisted",
                        reason="registry_reported") == 1
    assert metric_value(text, "eir_check_duration_seconds_count", interface="n5g_eir") == compared
    assert metric_value(text, "eir_check_duration_seconds_count", interface="s13") == compared
    assert metric_value(text, "http_requests_total", interface="n5g_eir", method="GET",
                        code="200") == compared
    assert metric_value(text, "http_connections", interface="n5g_eir") == 0


async def test_every_error_answer(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    async with h2c_client(gateway) as amf:
        unknown = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imeisv-3511111112345601"})
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["cause"] == "ERROR_EQUIPMENT_UNKNOWN"
        missing = await amf.get(EQUIPMENT_STATUS_PATH, params={"supi": f"imsi-{IMSI}"})
        assert missing.status_code == 400
        assert missing.json()["cause"] == "MANDATORY_QUERY_PARAM_MISSING"
        assert missing.json()["invalidParams"][0]["param"] == "query pei"
        bad = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-35209900123456"})
        assert (bad.status_code, bad.json()["cause"]) == (400, "MANDATORY_QUERY_PARAM_INCORRECT")
        post = await amf.post(EQUIPMENT_STATUS_PATH, params={"pei": "imei-352099001234563"})
        assert post.status_code == 405 and post.headers["allow"] == "GET"
        assert post.headers["content-type"] == "application/problem+json"
        other = await amf.get("/n5g-eir-eic/v1/other")
        assert other.status_code == 404
        assert other.json()["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"
        long = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "x" * 5000})
        assert long.status_code == 414 and long.headers["content-type"] == "application/problem+json"
        mac = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "mac-00-11-22-33-44-55"})
        assert (mac.status_code, mac.json()["cause"]) == (404, "ERROR_EQUIPMENT_UNKNOWN")
        ok = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-352099001234563"})
        assert ok.status_code == 200  # the connection survived all of the above
    _, text = await scrape(gateway)
    for code, count in (("200", 1), ("400", 2), ("404", 3), ("405", 1), ("414", 1)):
        assert metric_value(text, "http_requests_total", interface="n5g_eir",
                            method="GET" if code != "405" else "POST", code=code) == count, code


async def test_observations_and_gpsi_accepted(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with h2c_client(gateway) as amf:
        response = await amf.get(EQUIPMENT_STATUS_PATH, params={
            "pei": "imeisv-3520990012345601", "supi": f"imsi-{IMSI}",
            "gpsi": "msisdn-491711234567", "supported-features": "0",
        })
        assert response.json() == {"status": "WHITELISTED"}
    assert gateway.observations is not None
    assert gateway.observations.stats.recorded == 1  # the IMEI-IMSI pair, as S13 records it


@pytest.mark.skipif(CURL is None, reason="needs curl (with HTTP/2) to cross-check h2c")
async def test_curl_http2_prior_knowledge(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    assert CURL is not None
    url = f"{base_url(gateway)}{EQUIPMENT_STATUS_PATH}?pei=imei-356938035643803"
    process = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    body, _, trailer = out.decode().rpartition("\n")
    assert trailer == "200 2" and json.loads(body) == {"status": "BLACKLISTED"}


@pytest.mark.skipif(NGHTTP is None, reason="needs nghttp (Debian nghttp2-client) to cross-check "
                                           "HEAD")
async def test_nghttp_head_gets_a_response_without_content(start_gateway: StartGateway) -> None:
    """RFC 9110 §9.3.2: no content in a response to HEAD (405 here: only GET is defined).
    nghttp2 resets the stream of a HEAD response with DATA and reports the request failed."""
    gateway = await start_gateway()
    assert NGHTTP is not None
    url = f"{base_url(gateway)}{EQUIPMENT_STATUS_PATH}?pei=imei-356938035643803"
    process = await asyncio.create_subprocess_exec(
        NGHTTP, "-v", "-H", ":method: HEAD", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    text = out.decode() + err.decode()
    assert process.returncode == 0, text
    assert ":status: 405" in text and "allow: GET" in text, text
    assert "recv DATA" not in text and "RST_STREAM" not in text, text


@pytest.mark.skipif(H2LOAD is None,
                    reason="needs h2load (Debian nghttp2-client) for many streams on many "
                           "connections")
async def test_h2load_many_streams_on_many_connections(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    assert H2LOAD is not None
    url = f"{base_url(gateway)}{EQUIPMENT_STATUS_PATH}?pei=imei-352099001234563&supi=imsi-{IMSI}"
    # Bounded: 4,000 requests, 8 connections x 10 concurrent streams (h2c prior knowledge).
    process = await asyncio.create_subprocess_exec(
        H2LOAD, "-c8", "-m10", "-n4000", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 0, text
    assert "4000 succeeded, 0 failed, 0 errored" in text, text
    assert "status codes: 4000 2xx" in text, text
    async with h2c_client(gateway) as amf:  # and it still serves
        response = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-352099001234563"})
        assert response.status_code == 200


# --- TLS with ALPN h2 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    if OPENSSL is None:
        pytest.skip("needs the openssl CLI to make test certificates")
    directory = tmp_path_factory.mktemp("n5g-tls")
    return {
        "eir": _self_signed(directory, "localhost", "DNS:localhost,IP:127.0.0.1"),
        "amf": _self_signed(directory, "amf.example.net", "DNS:amf.example.net"),
    }


def tls_env(pki: dict[str, tuple[str, str]], verify_client: bool) -> dict[str, str]:
    cert, key = pki["eir"]
    return {
        "EIR_N5G_EIR_LISTEN": "https://127.0.0.1:0",
        "EIR_N5G_EIR_TLS_CERT": cert,
        "EIR_N5G_EIR_TLS_KEY": key,
        "EIR_N5G_EIR_TLS_CA": pki["amf"][0],
        "EIR_N5G_EIR_TLS_VERIFY_CLIENT": "true" if verify_client else "false",
    }


def client_context(pki: dict[str, tuple[str, str]], with_cert: bool,
                   alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["eir"][0])
    context.set_alpn_protocols(list(alpn))
    if with_cert:
        context.load_cert_chain(*pki["amf"])
    return context


@pytest.mark.parametrize("mutual", [False, True])
async def test_tls_alpn_h2(start_gateway: StartGateway, pki: dict[str, tuple[str, str]],
                           mutual: bool) -> None:
    gateway = await start_gateway(**tls_env(pki, verify_client=mutual))
    url = base_url(gateway, "https")
    async with httpx.AsyncClient(http2=True, verify=client_context(pki, with_cert=mutual),
                                 base_url=url, timeout=10) as amf:
        response = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-356938035643803"})
        assert response.http_version == "HTTP/2"  # negotiated with ALPN h2
        assert response.json() == {"status": "BLACKLISTED"}
    if mutual:
        async with httpx.AsyncClient(http2=True, verify=client_context(pki, with_cert=False),
                                     base_url=url, timeout=10) as stranger:
            with pytest.raises(httpx.HTTPError):
                await stranger.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-356938035643803"})


async def test_tls_without_alpn_h2_is_closed(start_gateway: StartGateway,
                                            pki: dict[str, tuple[str, str]]) -> None:
    """RFC 9113 §3.2: no HTTP/2 over TLS without ALPN h2. An HTTP/1.1 request is told 505
    (it read an empty reply); the HTTP/2 preface, or nothing, gets the connection closed."""
    gateway = await start_gateway(**tls_env(pki, verify_client=False))
    _, host, port = gateway.n5g_eir_sockets[0]
    context = client_context(pki, with_cert=False, alpn=("http/1.1",))
    for first, answer in ((b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"HTTP/1.1 505 "),
                          (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b""), (b"", b"")):
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(first)
        reply = await asyncio.wait_for(reader.read(), 10)  # then closed
        assert reply.startswith(answer) and (answer or reply == b""), reply[:40]
        writer.close()
    _, text = await scrape(gateway)
    assert metric_value(text, "http_requests_total", interface="n5g_eir", method="GET",
                        code="505") == 1


async def test_503_with_retry_after_while_the_diameter_side_sheds(
    start_gateway: StartGateway,
) -> None:
    # The measured control off (target 0) so that the reduction set below stays as set.
    gateway = await start_gateway(EIR_N5G_EIR_RETRY_AFTER_SECONDS="3",
                                  EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS="0")
    assert gateway.node is not None
    async with h2c_client(gateway) as amf:
        gateway.node.overload.reduction = 100  # as diameter.overload sets it past its target
        shed = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-352099001234563"})
        assert shed.status_code == 503 and shed.headers["retry-after"] == "3"
        assert shed.json()["cause"] == "NF_CONGESTION"
        gateway.node.overload.reduction = 0
        ok = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-352099001234563"})
        assert ok.status_code == 200


class _FailingHandler:
    """A handler whose every check raises, but for ``pei=imei-352099001234560``."""

    def handle(self, method: bytes, path: bytes, connection_in_flight: int = 0,
               authorization: bytes | None = None) -> Response:
        if b"352099001234560" in path:
            return Response(200, b"application/json", b'{"status":"WHITELISTED"}')
        raise RuntimeError("a bug in the check")


async def test_a_check_that_raises_is_a_500_on_its_stream_only() -> None:
    """An exception out of the handler answers 500 SYSTEM_FAILURE on its stream; it closed
    the whole connection (raised out of data_received), other streams and all."""
    server = N5gEirServer(_FailingHandler(),  # type: ignore[arg-type]
                          N5gEirSettings(listen=(HttpEndpoint("http", "127.0.0.1", 0),)))
    await server.start()
    try:
        _, host, port = server.sockets[0]
        async with httpx.AsyncClient(http1=False, http2=True, base_url=f"http://{host}:{port}",
                                     timeout=10) as amf:
            bad, good = await asyncio.gather(
                amf.get(f"{EQUIPMENT_STATUS_PATH}?pei=imei-356938035643809"),
                amf.get(f"{EQUIPMENT_STATUS_PATH}?pei=imei-352099001234560"))
            assert bad.status_code == 500 and bad.json()["cause"] == "SYSTEM_FAILURE"
            assert good.status_code == 200
            again = await amf.get(f"{EQUIPMENT_STATUS_PATH}?pei=imei-352099001234560")
            assert again.status_code == 200 and len(server.connections) == 1
    finally:
        await server.stop()


async def test_rapid_reset_streams_are_not_checked(start_gateway: StartGateway) -> None:
    """CVE-2023-44487: 1,000 requests each reset at once (HEADERS + RST_STREAM in one write),
    then one request. Every reset one was checked (counted, its IMEI-IMSI pair recorded) though
    it could never be answered, its stream's place among SETTINGS_MAX_CONCURRENT_STREAMS freed
    at once, so that nothing bounded the checks of one read; now only the last one is."""
    gateway = await start_gateway()
    _, host, port = gateway.n5g_eir_sockets[0]
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    reader, writer = await asyncio.open_connection(host, port)
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"eir"),
               (b":path", f"{EQUIPMENT_STATUS_PATH}?pei=imei-352099001234563"
                          f"&supi=imsi-{IMSI}".encode())]
    for stream_id in range(1, 2001, 2):
        client.send_headers(stream_id, headers, end_stream=True)
        client.reset_stream(stream_id)
    client.send_headers(2001, headers, end_stream=True)
    writer.write(client.data_to_send())
    ended = False
    while not ended:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "closed"
        ended = any(isinstance(e, StreamEnded) and e.stream_id == 2001
                    for e in client.receive_data(data))
    writer.close()
    _, text = await scrape(gateway)
    checks = metric_value(text, "eir_check_duration_seconds_count", interface="n5g_eir")
    # One read holds them all on loopback; a read split between a HEADERS and its RST_STREAM
    # would let that one through.
    assert 1 <= checks <= 5, checks
    assert metric_value(text, "http_requests_total", interface="n5g_eir", method="GET",
                        code="200") == 1


async def test_a_flood_of_empty_continuation_frames_is_stopped(
    start_gateway: StartGateway,
) -> None:
    """The CVE-2024-27316 class over loopback: a header block left open, then CONTINUATION
    frames without content (they never grow it past its bound). A million were read and the
    connection kept; now GOAWAY ENHANCE_YOUR_CALM after a few."""
    gateway = await start_gateway()
    _, host, port = gateway.n5g_eir_sockets[0]
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    reader, writer = await asyncio.open_connection(host, port)
    headers = HeadersFrame(1, flags=["END_STREAM"])
    headers.data = client.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                          (b":path", EQUIPMENT_STATUS_PATH.encode())])
    writer.write(client.data_to_send() + headers.serialize()
                 + ContinuationFrame(1).serialize() * 1000)
    terminated = []
    while not terminated:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "closed without GOAWAY"
        terminated = [e for e in client.receive_data(data) if isinstance(e, ConnectionTerminated)]
    assert terminated[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@pytest.mark.skipif(CURL is None, reason="needs curl to be an HTTP/1.1 client")
async def test_an_http1_client_gets_505_and_both_refusals_are_counted(
    start_gateway: StartGateway,
) -> None:
    """curl speaking HTTP/1.1 (and curl --http2, an h2c upgrade) on the h2c port read our
    SETTINGS and a GOAWAY as a response ("Received HTTP/0.9 when not allowed", exit 1); now
    505 HTTP Version Not Supported. That 505 and the 431 the session gives by itself were not
    counted in http_requests_total."""
    gateway = await start_gateway()
    assert CURL is not None
    url = f"{base_url(gateway)}{EQUIPMENT_STATUS_PATH}?pei=imei-356938035643803"
    for option in ("--http1.1", "--http2"):
        process = await asyncio.create_subprocess_exec(
            CURL, "-sS", option, "-w", "\n%{http_code} %{http_version}", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err
        body, _, trailer = out.decode().rpartition("\n")
        assert trailer == "505 1.1" and json.loads(body)["status"] == 505
    async with h2c_client(gateway) as amf:
        large = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": "imei-356938035643803"},
                              headers={"x-large": "a" * 20_000})
        assert large.status_code == 431
    _, text = await scrape(gateway)
    assert metric_value(text, "http_requests_total", interface="n5g_eir", method="GET",
                        code="505") == 2
    assert metric_value(text, "http_requests_total", interface="n5g_eir", method="GET",
                        code="431") == 1
