"""An MME built on python-diameter (PyPI ``python-diameter``), run against the gateway.

Runs ONLY in the interop virtualenv (``.venv-interop``): python-diameter's top-level package is
also called ``diameter`` and would shadow the gateway's own. The pytest side starts this script
as a subprocess and reads one JSON object per line from its stdout.

Usage: ``pd_client.py MODE SPEC_JSON`` where MODE is

* ``node``: python-diameter's own ``Node`` + ``SimpleThreadingApplication`` as the MME: its CER,
  its routing, its watchdog and its DPR on ``stop()``. Events: ``cea``, ``mica`` per check,
  ``dwa``, ``dpa``, ``done``. With ``"await_gateway_dpr": SECONDS`` in the spec it sends no DWR
  or DPR of its own but stays connected (answering the gateway's DWRs) until the gateway's DPR
  (events ``waiting``, ``dpr``, ``released``).
* ``raw``: python-diameter's message classes over a plain TCP socket: CER, each MICR, a DWR and a
  DPR built with its classes, every answer decoded by ``Message.from_bytes``. Events: ``cea``,
  ``mica``, ``dwa``, ``dpa``, ``closed``, ``done``.

SPEC_JSON: ``{"host", "port", "origin_host", "origin_realm", "peer_host", "peer_realm",
"checks": [{"imei", "imsi"?, "sv"?}], "timeout"}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from typing import Any

from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogRequest,
    DisconnectPeerRequest,
)
from diameter.message.commands.me_identity_check import MeIdentityCheckRequest
from diameter.message.constants import (
    APP_3GPP_S13_S13,
    E_AUTH_SESSION_STATE_NO_STATE_MAINTAINED,
    E_DISCONNECT_CAUSE_REBOOTING,
    VENDOR_TGPP,
)
from diameter.node.application import SimpleThreadingApplication

from diameter.node import Node

logging.basicConfig(stream=sys.stderr, level=logging.INFO)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def grouped_fields(value: Any) -> Any:
    if value is None:
        return None
    return {
        k: v for k, v in vars(value).items() if not k.startswith("_") and k != "additional_avps"
    }


def describe(answer: Message) -> dict[str, Any]:
    """The fields of an answer as python-diameter decoded them."""
    header = answer.header
    out: dict[str, Any] = {
        "class": type(answer).__name__,
        "command_code": header.command_code,
        "application_id": header.application_id,
        "flags": header.command_flags,
        "hop_by_hop": header.hop_by_hop_identifier,
        "end_to_end": header.end_to_end_identifier,
        "avp_codes": [[a.code, a.vendor_id] for a in answer.avps],
    }
    for name in (
        "session_id",
        "result_code",
        "origin_host",
        "origin_realm",
        "auth_session_state",
        "equipment_status",
        "error_message",
        "product_name",
        "vendor_id",
        "firmware_revision",
        "origin_state_id",
        "disconnect_cause",
    ):
        if hasattr(answer, name):
            value = getattr(answer, name)
            if isinstance(value, bytes):
                value = value.decode()
            out[name] = value
    for name in ("auth_application_id", "acct_application_id", "supported_vendor_id"):
        if hasattr(answer, name):
            out[name] = list(getattr(answer, name) or [])
    if hasattr(answer, "host_ip_address"):
        out["host_ip_address"] = [str(a) for a in (answer.host_ip_address or [])]
    if hasattr(answer, "vendor_specific_application_id"):
        vsai = answer.vendor_specific_application_id
        items = vsai if isinstance(vsai, list) else [vsai]
        out["vendor_specific_application_id"] = [grouped_fields(v) for v in items if v is not None]
    if hasattr(answer, "experimental_result"):
        out["experimental_result"] = grouped_fields(answer.experimental_result)
    if hasattr(answer, "failed_avp"):
        failed = answer.failed_avp
        items = failed if isinstance(failed, list) else [failed]
        out["failed_avp"] = [
            [[a.code, a.vendor_id] for a in f.additional_avps] for f in items if f is not None
        ]
    return out


def build_micr(
    spec: dict[str, Any], check: dict[str, Any], session_id: str
) -> MeIdentityCheckRequest:
    request = MeIdentityCheckRequest()
    request.header.is_request = True
    request.header.is_proxyable = True
    request.header.application_id = APP_3GPP_S13_S13
    request.session_id = session_id
    request.vendor_specific_application_id = VendorSpecificApplicationId(
        vendor_id=VENDOR_TGPP, auth_application_id=APP_3GPP_S13_S13
    )
    request.auth_session_state = E_AUTH_SESSION_STATE_NO_STATE_MAINTAINED
    request.origin_host = spec["origin_host"].encode()
    request.origin_realm = spec["origin_realm"].encode()
    request.destination_realm = spec["peer_realm"].encode()
    request.terminal_information = TerminalInformation(
        imei=check["imei"], software_version=check.get("sv")
    )
    if check.get("imsi"):
        request.user_name = check["imsi"]
    return request


# -- node mode ----------------------------------------------------------------------------------


class RecordingNode(Node):
    """python-diameter's Node, unchanged, with its base-protocol answers reported on stdout."""

    def receive_cea(self, conn: Any, message: Any) -> None:
        emit("cea", **describe(message))
        super().receive_cea(conn, message)

    def receive_dwa(self, conn: Any, message: Any) -> None:
        emit("dwa", **describe(message))
        super().receive_dwa(conn, message)

    def receive_dpa(self, conn: Any, message: Any) -> None:
        emit("dpa", **describe(message))
        super().receive_dpa(conn, message)

    def receive_dpr(self, conn: Any, message: Any) -> None:
        emit("dpr", **describe(message))
        super().receive_dpr(conn, message)


def run_node(spec: dict[str, Any]) -> None:
    timeout = float(spec.get("timeout", 5))
    node = RecordingNode(spec["origin_host"], spec["origin_realm"], vendor_ids=[VENDOR_TGPP])
    node.wakeup_interval = 1
    node.idle_timeout = int(spec.get("idle_timeout", 30))
    peer = node.add_peer(
        f"aaa://{spec['peer_host']}:{spec['port']};transport=tcp",
        spec["peer_realm"],
        ip_addresses=[spec["host"]],
        is_persistent=True,
    )
    app = SimpleThreadingApplication(
        APP_3GPP_S13_S13, is_auth_application=True, request_handler=lambda app, msg: None
    )
    node.add_application(app, [peer])
    node.start()
    try:
        app.wait_for_ready(timeout=timeout)
        for index, check in enumerate(spec["checks"]):
            request = build_micr(spec, check, node.session_generator.next_id())
            try:
                answer = app.send_request(request, timeout=timeout)
            except Exception as exc:
                emit("mica", index=index, imei=check["imei"], error=repr(exc))
                continue
            emit("mica", index=index, imei=check["imei"], **describe(answer))
        if spec.get("concurrent"):
            # Many requests in flight at once from python-diameter's threads: every answer must
            # come back to the request it belongs to (Hop-by-Hop / End-to-End matching).
            from concurrent.futures import ThreadPoolExecutor

            def one(index: int) -> tuple[int, Any, Any, str]:
                check = spec["concurrent"]["checks"][index % len(spec["concurrent"]["checks"])]
                session = node.session_generator.next_id()
                answer = app.send_request(build_micr(spec, check, session), timeout=timeout)
                return (
                    index,
                    answer.equipment_status,
                    answer.result_code,
                    answer.session_id == session,
                )

            total = int(spec["concurrent"]["count"])
            with ThreadPoolExecutor(max_workers=int(spec["concurrent"].get("threads", 32))) as pool:
                results = list(pool.map(one, range(total)))
            emit(
                "concurrent",
                statuses=[r[1] for r in results],
                result_codes=sorted({r[2] for r in results}),
                sessions_match=all(r[3] for r in results),
            )
        conn = peer.connection
        if spec.get("await_gateway_dpr"):
            # Stay connected, answering the gateway's DWRs, until the gateway sends its DPR.
            emit("waiting")
            deadline = time.time() + float(spec["await_gateway_dpr"])
            while peer.connection is not None and time.time() < deadline:
                time.sleep(0.05)
            emit("released", connected=peer.connection is not None)
        elif conn is not None:
            node.send_dwr(conn)
            deadline = time.time() + timeout
            while conn.is_waiting_for_dwa and time.time() < deadline:
                time.sleep(0.05)
            emit("dwr_done", waiting=conn.is_waiting_for_dwa)
    finally:
        node.stop(wait_timeout=int(timeout), force=False)
        emit("done", disconnect_reason=peer.disconnect_reason)


# -- raw mode -----------------------------------------------------------------------------------


class Wire:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.hop = 0x10000
        self.e2e = (int(time.time()) & 0xFFF) << 20

    def send(self, message: Message) -> Message:
        self.hop += 1
        self.e2e += 1
        message.header.hop_by_hop_identifier = self.hop
        message.header.end_to_end_identifier = self.e2e
        self.sock.sendall(message.as_bytes())
        return self.receive()

    def receive(self) -> Message:
        while True:
            if len(self.buffer) >= 4:
                length = struct.unpack("!I", self.buffer[:4])[0] & 0xFFFFFF
                if len(self.buffer) >= length:
                    data, self.buffer = self.buffer[:length], self.buffer[length:]
                    message = Message.from_bytes(data)
                    message.raw_hex = data.hex()  # type: ignore[attr-defined]
                    return message
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the gateway")
            self.buffer += chunk

    def wait_closed(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (TimeoutError, OSError):
            return False


def run_raw(spec: dict[str, Any]) -> None:
    timeout = float(spec.get("timeout", 5))
    wire = Wire(spec["host"], int(spec["port"]), timeout)
    origin_host, origin_realm = spec["origin_host"].encode(), spec["origin_realm"].encode()

    cer = CapabilitiesExchangeRequest()
    cer.origin_host, cer.origin_realm = origin_host, origin_realm
    cer.host_ip_address = [spec["host"]]
    cer.vendor_id = 0
    cer.product_name = "python-diameter raw MME"
    cer.origin_state_id = 1
    cer.supported_vendor_id = [VENDOR_TGPP]
    cer.vendor_specific_application_id = [
        VendorSpecificApplicationId(vendor_id=VENDOR_TGPP, auth_application_id=APP_3GPP_S13_S13)
    ]
    cea = wire.send(cer)
    emit("cea", raw=cea.raw_hex, **describe(cea))  # type: ignore[attr-defined]

    for index, check in enumerate(spec["checks"]):
        request = build_micr(spec, check, f"{spec['origin_host']};raw;{index}")
        answer = wire.send(request)
        emit("mica", index=index, imei=check["imei"], raw=answer.raw_hex, **describe(answer))  # type: ignore[attr-defined]

    dwr = DeviceWatchdogRequest()
    dwr.origin_host, dwr.origin_realm = origin_host, origin_realm
    dwr.origin_state_id = 1
    dwa = wire.send(dwr)
    emit("dwa", raw=dwa.raw_hex, **describe(dwa))  # type: ignore[attr-defined]

    dpr = DisconnectPeerRequest()
    dpr.origin_host, dpr.origin_realm = origin_host, origin_realm
    dpr.disconnect_cause = E_DISCONNECT_CAUSE_REBOOTING
    dpa = wire.send(dpr)
    emit("dpa", raw=dpa.raw_hex, **describe(dpa))  # type: ignore[attr-defined]
    # RFC 6733 §5.4: the receiver of the DPA (us) closes the transport; the gateway must
    # not have closed before that, so the socket is still readable-open here.
    wire.sock.shutdown(socket.SHUT_WR)
    emit("closed", by_gateway_after_our_fin=wire.wait_closed(timeout))
    wire.sock.close()
    emit("done")


def main() -> None:
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    watchdog = threading.Timer(float(spec.get("hard_timeout", 25)), lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    {"node": run_node, "raw": run_raw}[mode](spec)


if __name__ == "__main__":
    main()
