"""Fuzz targets of the N5g-eir receive path (RFC 9113, RFC 7541, TS 29.511), sans-IO.

* :class:`Http2Harness`: one input is the byte stream an AMF sends after the connection preface
  and an empty SETTINGS. An :class:`Http2Session` is fed it whole and in two pieces (what it
  sends and the requests it completes must not depend on how the bytes were split, RFC 9113
  §4.1); every request goes to the GetEquipmentStatus handler of the embedded default
  configuration and its response is queued; then the timers tick. Everything the session wrote
  must be well-formed frames whose header blocks the independent ``hpack`` decoder reads, on
  streams the client opened, with problem+json bodies that carry their status (RFC 9457).
* :class:`HpackHarness`: one input is a sequence of header blocks (each prefixed by a length
  octet) decoded by our :class:`HpackDecoder` and by the ``hpack`` distribution's decoder: both
  must accept or refuse each block alike and give the same fields.
* :class:`QueryHarness`: one input is a request ``:path``; ``parse_request`` gives a query or
  a problem, never an exception, and a query's identities are those the path carried.
* :class:`OAuth2Harness`: one input is an ``Authorization`` value; the access token verifier
  (RS256 and ES256 keys of its own) lets it through only if it carries a token those keys
  signed, else answers 401 or 403 with a Bearer challenge, never an exception.

Any exception other than the documented ones, or a broken property, is a finding.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import struct
import tempfile
from typing import Any

import hpack

from diameter.deferred import DeferredAnswer
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.metrics import GatewayMetrics
from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck
from gateway.n5g_eir.frames import PREFACE, FrameType, frame, settings_frame
from gateway.n5g_eir.hpack import HpackDecoder, HpackError
from gateway.n5g_eir.http2 import Http2Session, RequestReceived
from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.request import PATH_PREFIXES, EquipmentStatusQuery, parse_request
from gateway.n5g_eir.settings import N5gEirSettings

_FRAME_HEADER = struct.Struct(">HBBBI")
# Small limits, so that the fuzzer reaches them: 4 concurrent streams, a 1,024-byte header list.
SETTINGS = N5gEirSettings(max_concurrent_streams=4, max_header_list_bytes=1024,
                          max_uri_bytes=512, idle_timeout_seconds=5.0,
                          ping_interval_seconds=2.0, ping_timeout_seconds=1.0)
CLIENT_START = PREFACE + settings_frame({}) + frame(FrameType.SETTINGS, 0x1, 0)  # and the ACK


def _env(state: str) -> dict[str, str]:
    return {
        "EIR_STATE_DIRECTORY": state,
        "EIR_OBSERVATIONS_ENABLED": "false",
        "EIR_REGISTRY_BACKEND": "none",
        "EIR_LISTS_POLL_INTERVAL_SECONDS": "0",
    }


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every frame in ``data``, which must hold whole
    frames only."""
    frames, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 9, "a truncated frame header"
        high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
        length = (high << 8) | low
        end = pos + 9 + length
        assert end <= len(data), "a truncated frame"
        assert not stream_id & 0x80000000, "the reserved bit set"
        frames.append((kind, flags, stream_id, data[pos + 9 : end]))
        pos = end
    return frames


class Http2Harness:
    """An :class:`Http2Session` in front of the handler of the embedded default configuration."""

    def __init__(self) -> None:
        self._state = tempfile.TemporaryDirectory(prefix="eir-fuzz-h2-")
        config = load_config(None, env=_env(self._state.name))
        classifier = Classifier.from_config(config, None)
        self.handler = EquipmentIdentityCheck(classifier, SETTINGS, GatewayMetrics())
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        self._loop.close()
        self._state.cleanup()

    def run(self, data: bytes) -> None:
        whole = self._session(data, 1)
        split = self._session(data, 2)
        assert whole == split, "the session depends on how the bytes were split"
        self._check_output(*whole)

    def _session(self, data: bytes, pieces: int) -> tuple[bytes, list[RequestReceived]]:
        session = Http2Session(SETTINGS, PATH_PREFIXES)
        session.initiate()
        requests = session.receive(CLIENT_START)
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            requests += session.receive(data[start : start + step])
        for request in requests:
            session.respond(request.stream_id, self._handle(request))
        for now in (0.0, 3.0, 4.5, 9.0, 15.0):
            session.tick(now)
        return session.data_to_send(), requests

    def _handle(self, request: RequestReceived) -> Response:
        result: Any = self.handler.handle(request.method, request.path, 0, request.authorization)
        if isinstance(result, DeferredAnswer):
            raise AssertionError("no shared count in this configuration: nothing is deferred")
        if inspect.isawaitable(result):
            result = self._loop.run_until_complete(result)
        assert isinstance(result, Response), result
        return result

    def _check_output(self, out: bytes, requests: list[RequestReceived]) -> None:
        opened = {request.stream_id for request in requests}
        decoder = hpack.Decoder()
        goaway = False
        for kind, flags, stream_id, payload in parse_frames(out):
            assert not goaway or kind in (FrameType.GOAWAY, FrameType.PING), "a frame after GOAWAY"
            if kind == FrameType.GOAWAY:
                assert stream_id == 0 and len(payload) >= 8
                goaway = int.from_bytes(payload[4:8], "big") != 0  # a connection error: last
            elif kind == FrameType.HEADERS:
                assert flags & 0x4, "a response block split over CONTINUATION"
                fields = dict(decoder.decode(payload, raw=True))
                status = int(fields[b":status"])
                assert 200 <= status <= 599
                assert stream_id % 2 == 1
            elif kind == FrameType.DATA:
                assert stream_id in opened or stream_id % 2 == 1
            elif kind == FrameType.RST_STREAM:
                assert stream_id and len(payload) == 4
            elif kind == FrameType.WINDOW_UPDATE:
                increment = int.from_bytes(payload, "big")
                assert 0 < increment < 2**31, "a WINDOW_UPDATE of 0 or past the window"
        for request in requests:
            assert request.stream_id % 2 == 1 and request.method and (
                request.path or request.method == b"CONNECT")


class HpackHarness:
    """Our HPACK decoder against the ``hpack`` distribution's, block by block."""

    def run(self, data: bytes) -> None:
        ours = HpackDecoder()
        theirs = hpack.Decoder()
        theirs.max_header_list_size = 1 << 30
        pos = 0
        while pos < len(data):
            length = data[pos]
            block = data[pos + 1 : pos + 1 + length]
            pos += 1 + length
            try:
                fields, size = ours.decode(block, 1 << 30)
            except HpackError:
                fields = None
            try:
                expected = theirs.decode(block, raw=True)
            except (hpack.HPACKError, IndexError, UnicodeDecodeError):
                expected = None
            if fields is None or expected is None:
                # Either refused the block: both contexts may now differ, as after any
                # COMPRESSION_ERROR the connection is gone (RFC 9113 §4.3).
                assert fields is None, f"we accepted a block hpack refuses: {block.hex()}"
                assert expected is None, f"we refused a block hpack accepts: {block.hex()}"
                return
            assert [tuple(f) for f in fields] == [tuple(f) for f in expected], block.hex()
            assert size == sum(len(n) + len(v) + 32 for n, v in fields)


class QueryHarness:
    """``parse_request`` of GetEquipmentStatus on any ``:path``."""

    def run(self, data: bytes) -> None:
        method = b"GET" if not data or data[0] & 1 else b"POST"
        path = data[1:]
        result = parse_request(method, path, 512)
        if isinstance(result, EquipmentStatusQuery):
            assert method == b"GET" and len(path) <= 512
            assert result.pei.value.isascii()
            return
        assert isinstance(result, Response), result
        assert result.status in (200, 400, 404, 405, 414), result.status
        if result.content_type == b"application/problem+json":
            body = json.loads(result.body)
            assert body["status"] == result.status
            if result.status == 400:
                assert body["cause"], body
                for param in body.get("invalidParams", ()):
                    assert param["param"].startswith("query "), body


class OAuth2Harness:
    """``AccessTokenVerifier.check`` on any ``Authorization`` value."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        from gateway.n5g_eir.oauth2 import AccessTokenVerifier

        keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
                ec.generate_private_key(ec.SECP256R1()).public_key()]
        self.verifier = AccessTokenVerifier(keys, ["5G_EIR"], clock=lambda: 1_800_000_000.0,
                                            issuers=["nrf"], subjects=["amf"])

    def run(self, data: bytes) -> None:
        response = self.verifier.check(data)
        # No input here was signed by these keys (made at start-up): nothing gets through.
        assert response is not None and response.status in (401, 403), data[:64]
        challenge = dict(response.headers)[b"www-authenticate"]
        assert challenge.startswith(b"Bearer ") and b"\n" not in challenge
        assert json.loads(response.body)["status"] == response.status
