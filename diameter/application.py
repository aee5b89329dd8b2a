"""What the Diameter layer knows about applications, peers and observers of its traffic.

An ``Application`` is registered on the node by application id (RFC 6733 §2.4); its handlers are
looked up by command code. ``PeerInfo`` is what the capabilities exchange told us about a peer.
``Observer`` lets an upper layer count messages and peer states without this package importing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from diameter.codec import Avp, Message
from diameter.deferred import DeferredAnswer

if TYPE_CHECKING:
    from diameter.lane import LaneRequest

# A handler answers a request with a Message or with already-encoded answer bytes (the fast
# path), synchronously (a cache hit), as an awaitable (one task per request) or as a
# DeferredAnswer it gives later from a callback of its own (no task, no future).
HandlerResult = Message | bytes
HandlerReturn = HandlerResult | Awaitable[HandlerResult] | DeferredAnswer
Handler = Callable[[Message, "PeerInfo"], HandlerReturn]
# A lane's handler gets the request's octets and the fields its lane asked for (diameter.lane).
LaneHandler = Callable[["LaneRequest", "PeerInfo"], HandlerReturn]


@dataclass(frozen=True, slots=True)
class Lane:
    """How an application takes a command's requests of a learnt shape (``diameter.lane``):
    ``handler`` gets a ``LaneRequest`` whose ``fields`` hold, in the order of ``fields`` here,
    the data of the first AVP along each path of (code, vendor) keys (None when absent), as
    ``Message.find`` then ``Avp.find`` would find it. Shapes with a top-level AVP of ``absent``
    are never learnt (their requests always take ``Application.handlers``). The handler may
    hand anything unusual to the full path's handler with ``LaneRequest.message``."""

    handler: LaneHandler
    fields: tuple[tuple[tuple[int, int], ...], ...] = ()
    absent: frozenset[tuple[int, int]] = frozenset()


@dataclass(frozen=True, slots=True)
class Application:
    """One Diameter application served by the node.

    ``vendor_id`` non-zero: advertised in CER/CEA as Vendor-Specific-Application-Id {Vendor-Id,
    Auth-Application-Id} plus Supported-Vendor-Id (RFC 6733 §6.11); zero: as Auth-Application-Id.
    ``error_answer_body`` is added to non-3xxx error answers so they satisfy the application's
    answer CCF (e.g. S13's Auth-Session-State).
    """

    application_id: int
    handlers: Mapping[int, Handler]
    vendor_id: int = 0
    error_answer_body: tuple[Avp, ...] = ()
    name: str = ""
    # Command code -> its lane for requests of a learnt shape (diameter.lane); none: every
    # request takes ``handlers``.
    lanes: Mapping[int, Lane] = field(default_factory=dict)


def vendor_specific_application_id(vendor_id: int, application_id: int) -> Avp:
    """RFC 6733 §6.11 Vendor-Specific-Application-Id {Vendor-Id, Auth-Application-Id}."""
    return Avp.new(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", vendor_id), Avp.new("Auth-Application-Id", application_id)],
    )


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The remote peer as learnt from its CER or CEA (RFC 6733 §5.3)."""

    origin_host: str
    origin_realm: str
    applications: frozenset[int]  # common applications (relay 0xffffffff included if offered)
    host_ip_addresses: tuple[str, ...] = ()
    vendor_id: int = 0
    product_name: str = ""
    firmware_revision: int | None = None
    origin_state_id: int | None = None
    supported_vendor_ids: frozenset[int] = frozenset()
    remote_address: tuple[str, int] | None = None
    transport: str = "tcp"
    role: str = "responder"  # our role on this connection: "responder" | "initiator"


class Observer(Protocol):
    """Hook for metrics. ``on_message``: ``direction`` "in" or "out", ``command`` a short name
    ("CER", "ECA"), ``result_code`` of answers we send (None for requests and received messages),
    ``count`` such messages (overload control counts a read's refusals at once).
    ``on_peer_state``: ``peer`` is the ``diameter.peer.Peer`` connection (``peer.info`` once
    open), states are ``PeerState`` members; a new connection reports ``None -> CLOSED`` and a
    finished one ``CLOSED -> None``, so a gauge per state adds up to the live connections.
    ``on_avp_flag_deviation``: a received AVP of the dictionary, named ``avp``, had its M bit set
    against its rule (RFC 6733 §4.5) and was accepted (``PeerSettings.strict_avp_flags`` off)."""

    def on_message(
        self, direction: str, command: str, result_code: int | None, count: int = 1
    ) -> None: ...

    def on_peer_state(self, peer: object, old_state: object, new_state: object) -> None: ...

    def on_avp_flag_deviation(self, avp: str) -> None: ...


class NullObserver:
    """The default observer: counts nothing."""

    def on_message(
        self, direction: str, command: str, result_code: int | None, count: int = 1
    ) -> None:
        return None

    def on_peer_state(self, peer: object, old_state: object, new_state: object) -> None:
        return None

    def on_avp_flag_deviation(self, avp: str) -> None:
        return None
