"""Builders shared by the peer, watchdog and transport tests (no tests here).

A responder node "eir.example.net" serving S13 with a trivial handler answering 2001, an initiator
node "mme.example.net", message builders and a pump that wires two sans-IO cores together.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from diameter.answer import answer_to
from diameter.application import Application, PeerInfo, vendor_specific_application_id
from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message, decode_message
from diameter.events import Event, RequestReceived
from diameter.node import Node
from diameter.peer import Peer, Role
from diameter.settings import LocalIdentity, PeerSettings

S13 = 16777252
VENDOR_3GPP = 10415
ECR = 324
EIR_HOST = "eir.example.net"
MME_HOST = "mme.example.net"
REALM = "example.net"
IMEI = "35395803121326"
REMOTE = ("127.0.0.1", 40000)

EIR_IDENTITY = LocalIdentity(
    origin_host=EIR_HOST,
    origin_realm=REALM,
    host_ip_addresses=("127.0.0.1",),
    vendor_id=VENDOR_3GPP,
    product_name="eir-test",
    firmware_revision=7,
    origin_state_id=1234,
)
MME_IDENTITY = LocalIdentity(
    origin_host=MME_HOST,
    origin_realm=REALM,
    host_ip_addresses=("127.0.0.1",),
    origin_state_id=99,
)


def s13_error_body() -> tuple[Avp, ...]:
    return (
        vendor_specific_application_id(VENDOR_3GPP, S13),
        Avp.new("Auth-Session-State", 1),
    )


class Recorder:
    """An Observer that keeps every call."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, int | None]] = []
        self.states: list[tuple[object, object, object]] = []
        self.flag_deviations: list[str] = []

    def on_message(
        self, direction: str, command: str, result_code: int | None, count: int = 1
    ) -> None:
        self.messages.extend([(direction, command, result_code)] * count)

    def on_peer_state(self, peer: object, old_state: object, new_state: object) -> None:
        self.states.append((peer, old_state, new_state))

    def on_avp_flag_deviation(self, avp: str) -> None:
        self.flag_deviations.append(avp)


def ok_handler(node: Node) -> Any:
    def handle(request: Message, peer: PeerInfo) -> Message:
        return answer_to(
            request,
            node.identity,
            2001,
            body=[Avp.new("Auth-Session-State", 1), Avp.new("Equipment-Status", 0)],
        )

    return handle


def eir_node(handlers: dict[int, Any] | None = None, **settings: Any) -> Node:
    """The responder: S13 with a handler answering 2001 unless ``handlers`` says otherwise."""
    peer_settings = replace(PeerSettings(identity=EIR_IDENTITY), **settings)
    node = Node(peer_settings, observer=Recorder(), rng=random.Random(7))
    app = Application(
        S13,
        handlers if handlers is not None else {ECR: ok_handler(node)},
        vendor_id=VENDOR_3GPP,
        error_answer_body=s13_error_body(),
    )
    node.add_application(app)
    return node


def mme_node(applications: Iterable[Application] | None = None, **settings: Any) -> Node:
    peer_settings = replace(PeerSettings(identity=MME_IDENTITY), **settings)
    apps = applications if applications is not None else [Application(S13, {}, VENDOR_3GPP)]
    return Node(peer_settings, apps, observer=Recorder(), rng=random.Random(11))


def cer(
    origin_host: str = MME_HOST,
    origin_realm: str = REALM,
    *,
    apps: Iterable[Avp] | None = None,
    hop_by_hop: int = 0x101,
    drop: Iterable[str] = (),
) -> bytes:
    """A CER as an MME sends it (S13 in a Vendor-Specific-Application-Id by default)."""
    avps = [
        Avp.new("Origin-Host", origin_host),
        Avp.new("Origin-Realm", origin_realm),
        Avp.new("Host-IP-Address", "127.0.0.1"),
        Avp.new("Vendor-Id", VENDOR_3GPP),
        Avp.new("Product-Name", "mme-test"),
    ]
    avps.extend(
        apps if apps is not None else [vendor_specific_application_id(VENDOR_3GPP, S13)]
    )
    dropped = set(drop)
    avps = [a for a in avps if a.definition() is None or a.definition().name not in dropped]  # type: ignore[union-attr]
    return Message(257, 0, FLAG_REQUEST, hop_by_hop, 0x5CA1AB1E, avps).encode()


def base_request(code: int, hop_by_hop: int = 0x202, extra: Iterable[Avp] = ()) -> bytes:
    avps = [Avp.new("Origin-Host", MME_HOST), Avp.new("Origin-Realm", REALM), *extra]
    return Message(code, 0, FLAG_REQUEST, hop_by_hop, 0xE2E0 + hop_by_hop, avps).encode()


def ecr_message(
    *,
    hop_by_hop: int = 0x303,
    end_to_end: int = 0xE2E303,
    origin_host: str = MME_HOST,
    imei: str = IMEI,
    application_id: int = S13,
    command_code: int = ECR,
    destination_host: str | None = None,
    destination_realm: str | None = REALM,
    drop: Iterable[str] = (),
    flags: int = FLAG_REQUEST | FLAG_PROXIABLE,
) -> Message:
    avps = [
        Avp.new("Session-Id", f"{origin_host};1;{end_to_end}"),
        vendor_specific_application_id(VENDOR_3GPP, S13),
        Avp.new("Auth-Session-State", 1),
        Avp.new("Origin-Host", origin_host),
        Avp.new("Origin-Realm", REALM),
    ]
    if destination_host is not None:
        avps.append(Avp.new("Destination-Host", destination_host))
    if destination_realm is not None:
        avps.append(Avp.new("Destination-Realm", destination_realm))
    avps.append(Avp.new("Terminal-Information", [Avp.new("IMEI", imei)]))
    dropped = set(drop)
    avps = [a for a in avps if a.definition().name not in dropped]  # type: ignore[union-attr]
    return Message(command_code, application_id, flags, hop_by_hop, end_to_end, avps)


def ecr(**kwargs: Any) -> bytes:
    return ecr_message(**kwargs).encode()


def responder(node: Node | None = None, now: float = 0.0, **kwargs: Any) -> Peer:
    kwargs.setdefault("remote_address", REMOTE)
    return Peer(node or eir_node(), Role.RESPONDER, now, **kwargs)


def open_responder(
    node: Node | None = None, now: float = 0.0, origin_host: str = MME_HOST, **kwargs: Any
) -> Peer:
    """A responder that accepted a CER from ``origin_host`` (its CEA already taken out)."""
    peer = responder(node, now, **kwargs)
    peer.receive_data(cer(origin_host), now)
    answer = decode_message(peer.data_to_send())
    assert answer.get("Result-Code") == 2001, answer
    return peer


def answers(peer: Peer) -> list[Message]:
    """Every message the core wants to send, decoded."""
    data = peer.data_to_send()
    out = []
    while data:
        length = int.from_bytes(data[1:4], "big")
        out.append(decode_message(data[:length]))
        data = data[length:]
    return out


def serve(peer: Peer, event: Event, now: float) -> None:
    """Answer a RequestReceived with its (synchronous) handler, as the transport would."""
    assert isinstance(event, RequestReceived)
    answer = event.handler(event.message, event.peer)
    assert isinstance(answer, (Message, bytes))
    peer.send_answer(event, answer, now)


def pump(a: Peer, b: Peer, now: float) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send; collect the events."""
    events_a: list[Event] = []
    events_b: list[Event] = []
    for _ in range(100):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            break
        if out_a and not b.closed:
            events_b.extend(b.receive_data(out_a, now))
        if out_b and not a.closed:
            events_a.extend(a.receive_data(out_b, now))
    return events_a, events_b


def connected_pair(
    server: Node | None = None, client: Node | None = None, now: float = 0.0
) -> tuple[Peer, Peer]:
    """An initiator core and a responder core after CER/CEA (both open)."""
    server = server or eir_node()
    client = client or mme_node()
    r = Peer(server, Role.RESPONDER, now, remote_address=REMOTE)
    i = Peer(client, Role.INITIATOR, now)
    i.start(now)
    i.connection_made(now)
    pump(i, r, now)
    assert i.is_open and r.is_open
    return i, r
