"""Events the sans-IO peer core hands to its owner (RFC 6733 §5.6), small frozen classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from diameter.codec import Message, decode_message
from diameter.lane import LaneRequest

if TYPE_CHECKING:

    from diameter.application import Application, Handler, HandlerReturn, PeerInfo


@dataclass(frozen=True, slots=True)
class PeerUp:
    """Capabilities exchange done (R-Open or I-Open)."""

    info: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerDown:
    """The connection is over (Closed); ``reason`` says why, for logs."""

    reason: str


@dataclass(slots=True, eq=False)
class RequestReceived:
    """A well-formed application request to hand to ``handler`` (RFC 6733 §5.6: Process).

    The owner answers with ``Peer.send_answer(event, answer, now)``. One per request: not frozen,
    since a frozen dataclass's __init__ costs four times as much; treat it as read-only.
    """

    message: Message
    raw: bytes
    peer: PeerInfo
    application: Application
    handler: Handler
    key: tuple[str, int] | None  # (origin-host, end-to-end) for duplicate detection

    def call(self) -> HandlerReturn:
        return self.handler(self.message, self.peer)


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """An answer to one of our application requests, matched by Hop-by-Hop (RFC 6733 §3).

    ``message`` decodes ``raw`` on every access; the raw fast path uses ``raw`` only.
    """

    hop_by_hop: int
    raw: bytes

    @property
    def message(self) -> Message:
        return decode_message(self.raw)


Event = PeerUp | PeerDown | RequestReceived | LaneRequest | AnswerReceived
AnyRequest = RequestReceived | LaneRequest
