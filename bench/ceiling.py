"""The "ceiling" responder: the fastest a Python asyncio Diameter server can answer S13 here.

It frames messages (RFC 6733 §3 Message Length) and answers from pre-encoded bytes without
decoding anything: per message it reads the command code and flags from the header, and answers

* CER (257) with a pre-encoded CEA (Result-Code 2001, S13 advertised, RFC 6733 §5.3.2),
* DWR (280) with a DWA, DPR (282) with a DPA and then closes (RFC 6733 §5.4),
* ME-Identity-Check-Request (324) with a pre-encoded ME-Identity-Check-Answer (Result-Code 2001,
  Equipment-Status WHITELISTED, TS 29.272 §7.2.20),

copying in the request's Hop-by-Hop and End-to-End identifiers and its first AVP, which the S13
CCF places first: the Session-Id (RFC 6733 §8.8, §6.2 answers carry it). The answer length is the
only computed field. Every answer of one read goes out in one write, with TCP_NODELAY.

Run: ``python bench/ceiling.py [--host 127.0.0.1] [--port 0]``; prints ``ready PORT`` once
listening and serves until SIGTERM/SIGINT. bench/e2e.py starts it as a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import sys
from typing import cast

from diameter.codec import FLAG_PROXIABLE, Avp
from diameter.dictionary.base_rfc6733 import AuthSessionState
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, EquipmentStatus
from diameter.dictionary.ts29272_s13 import VENDOR as VENDOR_3GPP
from gateway import aio

CER, DWR, DPR, MICR = 257, 280, 282, 324
ORIGIN_HOST = "ceiling.localdomain"
ORIGIN_REALM = "localdomain"
_HEAD = struct.Struct("!III")  # version+length, flags+command code, application id


def _identity() -> list[Avp]:
    return [Avp.new("Origin-Host", ORIGIN_HOST), Avp.new("Origin-Realm", ORIGIN_REALM)]


def _vsai() -> Avp:
    return Avp.new(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", VENDOR_3GPP), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )


def _body(avps: list[Avp]) -> bytes:
    return b"".join(a.encode() for a in avps)


# Bodies after the copied part (everything but the header; MICA also without its Session-Id).
CEA_BODY = _body(
    [
        Avp.new("Result-Code", 2001),
        *_identity(),
        Avp.new("Host-IP-Address", "127.0.0.1"),
        Avp.new("Vendor-Id", 0),
        Avp.new("Product-Name", "ceiling"),
        Avp.new("Supported-Vendor-Id", VENDOR_3GPP),
        _vsai(),
    ]
)
DWA_BODY = _body([Avp.new("Result-Code", 2001), *_identity()])
DPA_BODY = DWA_BODY
MICA_BODY = _body(
    [
        _vsai(),
        Avp.new("Result-Code", 2001),
        Avp.new("Auth-Session-State", AuthSessionState.NO_STATE_MAINTAINED),
        *_identity(),
        Avp.new("Equipment-Status", EquipmentStatus.WHITELISTED),
    ]
)


def _base_answer(flags_command: int, body: bytes, raw: bytes) -> bytes:
    return (
        _HEAD.pack(0x01000000 | (20 + len(body)), flags_command, 0) + raw[12:20] + body
    )


class CeilingProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; both have the same methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out: list[bytes] = []
        offset, size = 0, len(buf)
        close = False
        mica_head = 0x01000000 + 20 + len(MICA_BODY)
        mica_flags = (FLAG_PROXIABLE << 24) | MICR
        while size - offset >= 20:
            length = int.from_bytes(buf[offset + 1 : offset + 4], "big")
            if length < 20 or buf[offset] != 1:
                assert self.transport is not None
                self.transport.abort()  # not Diameter: RFC 6733 §2.1, nothing to resync on
                return
            if size - offset < length:
                break
            end = offset + length
            command = int.from_bytes(buf[offset + 5 : offset + 8], "big")
            if command == MICR:
                # The first AVP is the Session-Id (TS 29.272 §7.2.19): copied, padding included.
                sid_length = int.from_bytes(buf[offset + 25 : offset + 28], "big")
                sid_end = offset + 20 + ((sid_length + 3) & ~3)
                out.append(
                    _HEAD.pack(mica_head + sid_end - offset - 20, mica_flags, S13_APPLICATION_ID)
                    + buf[offset + 12 : offset + 20]
                    + buf[offset + 20 : sid_end]
                    + MICA_BODY
                )
            elif command == CER:
                out.append(_base_answer(CER, CEA_BODY, bytes(buf[offset:end])))
            elif command == DWR and buf[offset + 4] & 0x80:
                out.append(_base_answer(DWR, DWA_BODY, bytes(buf[offset:end])))
            elif command == DPR and buf[offset + 4] & 0x80:
                out.append(_base_answer(DPR, DPA_BODY, bytes(buf[offset:end])))
                close = True
            offset = end
        if offset:
            del buf[:offset]
        transport = self.transport
        assert transport is not None
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CeilingProtocol, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    aio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
