"""Seed inputs of the fuzz targets other than ``diameter`` (:data:`SEEDS`). Those of N5g-eir and
the provisioning API (tests/fuzz/n5g_harness.py, tests/fuzz/api_harness.py) are here: requests as
h2load and nghttp2 send them (Huffman-coded, indexed), the shapes the hostile-traffic benches use
(CONTINUATION, padding, trailers, PING, SETTINGS, WINDOW_UPDATE, RST_STREAM), header blocks with
dynamic table updates, and query strings; the RESP reader's beside its harness
(tests/fuzz/resp_harness.py)."""

from __future__ import annotations

import json

import hpack

from gateway.n5g_eir.frames import (
    END_HEADERS,
    END_STREAM,
    PADDED,
    ErrorCode,
    FrameType,
    Setting,
    frame,
    rst_stream_frame,
    settings_frame,
    window_update_frame,
)
from tests.fuzz.resp_harness import resp_seeds

PATH = "/n5g-eir-eic/v1/equipment-status"
QUERIES = {
    "imei": "?pei=imei-352099001234560",
    "imeisv-supi": "?pei=imeisv-3520990012345601&supi=imsi-001010123456789",
    "gpsi-features": "?pei=imei-356938035643809&gpsi=msisdn-491701234567&supported-features=0A",
    "escaped": "?p%65i=imei-35209900123456%30&supi=nai-user%40example.net",
    "mac": "?pei=mac-00-11-22-33-44-55",
    "repeated": "?pei=imei-352099001234560&pei=imei-356938035643809",
    "bad-utf8": "?pei=%ff%fe",
    "missing": "?supi=imsi-001010123456789",
}


def _request(encoder: hpack.Encoder, path: str, method: str = "GET",
             extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return encoder.encode([(":method", method), (":scheme", "http"),
                           (":authority", "eir.test"), (":path", path),
                           ("user-agent", "fuzz"), *extra])


def http2_seeds() -> dict[str, bytes]:
    encoder = hpack.Encoder()
    out: dict[str, bytes] = {}
    stream = 1
    many = b""
    for name, query in QUERIES.items():
        block = _request(encoder, PATH + query)
        one = frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream, block)
        out[f"h2-{name}"] = one
        many += one
        stream += 2
    out["h2-many"] = many
    block = _request(hpack.Encoder(), PATH + QUERIES["imei"])
    out["h2-continuation"] = (frame(FrameType.HEADERS, END_STREAM, 1, block[:5])
                              + frame(FrameType.CONTINUATION, 0, 1, block[5:9])
                              + frame(FrameType.CONTINUATION, END_HEADERS, 1, block[9:]))
    out["h2-padded-body-trailers"] = (
        frame(FrameType.HEADERS, END_HEADERS | PADDED, 1,
              b"\x03" + _request(hpack.Encoder(), PATH + QUERIES["imei"], "GET",
                                 (("content-length", "4"),)) + b"\0\0\0")
        + frame(FrameType.DATA, PADDED, 1, b"\x02abcd\0\0")
        + frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
                hpack.Encoder().encode([("x-trailer", "1")])))
    out["h2-control"] = (
        frame(FrameType.PING, 0, 0, b"12345678") + settings_frame(
            {Setting.INITIAL_WINDOW_SIZE: 10, Setting.HEADER_TABLE_SIZE: 0,
             Setting.MAX_FRAME_SIZE: 16_384})
        + window_update_frame(0, 1000)
        + frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 3,
                _request(hpack.Encoder(), PATH + QUERIES["imei"]))
        + window_update_frame(3, 100) + rst_stream_frame(3, ErrorCode.CANCEL)
        + frame(FrameType.PRIORITY, 0, 5, b"\0\0\0\x01\x10")
        + frame(FrameType.GOAWAY, 0, 0, b"\0\0\0\0\0\0\0\0"))
    out["h2-post-openapi"] = frame(
        FrameType.HEADERS, END_HEADERS | END_STREAM, 1,
        _request(hpack.Encoder(), "/n5g-eir-eic/v1/openapi.yaml", "POST"))
    return out


def hpack_seeds() -> dict[str, bytes]:
    encoder = hpack.Encoder()
    out: dict[str, bytes] = {}
    blocks = [_request(encoder, PATH + query) for query in QUERIES.values()]
    blocks.append(b"\x3f\xe1\x1f" + _request(encoder, PATH))  # a size update to 4096 first
    blocks.append(b"\x20" + hpack.Encoder().encode([("x-a", "b" * 100)]))
    for n, block in enumerate(blocks):
        if len(block) < 256:
            out[f"hpack-{n}"] = bytes((len(block),)) + block
    out["hpack-sequence"] = b"".join(bytes((len(b),)) + b for b in blocks if len(b) < 256)
    return out


def query_seeds() -> dict[str, bytes]:
    out = {f"query-{name}": b"\x01" + (PATH + query).encode() for name, query in QUERIES.items()}
    out["query-post"] = b"\x00" + PATH.encode() + b"?pei=imei-352099001234560"
    out["query-openapi"] = b"\x01/n5g-eir-eic/v1/openapi.yaml"
    return out


def api_seeds() -> dict[str, bytes]:
    entries = [
        {"list": "black", "kind": "imei", "value": "35209900123456", "reason": "stolen"},
        {"list": "grey", "kind": "range", "value": "35209900123456-35209900123460"},
        {"list": "white", "kind": "tac", "value": "35209900", "imsi": None},
        {"list": "black", "kind": "pair", "value": "352099001234560", "imsi": "001010123456789",
         "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-02T03:04:05Z"},
    ]
    rests = ["black/imei:35209900123456", "grey/pair:352099001234560:001010123456789",
             "WyJpbWVpIiwgImJsYWNrIiwgMSwgMSwgIiJd", "3520990012345601"]
    return {f"api-{n}": json.dumps(entry).encode() + b"\0" + rest.encode()
            for n, (entry, rest) in enumerate(zip(entries, rests, strict=True))}


def oauth2_seeds() -> dict[str, bytes]:
    """Bearer tokens of the JWS compact form, signed by a key the harness does not know."""
    import base64

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    claims = b64(json.dumps({"iss": "nrf", "sub": "amf", "aud": ["5G_EIR"], "exp": 1.9e9,
                             "scope": "n5g-eir-eic"}).encode())
    out = {}
    for alg, size in (("RS256", 256), ("ES256", 64), ("none", 0), ("HS256", 32)):
        header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        out[f"oauth2-{alg}"] = b"Bearer " + header + b"." + claims + b"." + b64(b"\1" * size)
    out["oauth2-basic"] = b"Basic dXNlcjpwYXNz"
    return out


SEEDS = {"http2": http2_seeds, "hpack": hpack_seeds, "query": query_seeds, "api": api_seeds,
         "oauth2": oauth2_seeds, "resp": resp_seeds}
