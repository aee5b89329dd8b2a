"""The Diameter peer state machine (RFC 6733 §5.6), sans-IO, one object per transport connection.

Bytes in with ``receive_data(data, now)``, events out (``PeerUp``, ``PeerDown``,
``RequestReceived``, ``AnswerReceived``), bytes to write from ``data_to_send()``, one timer through
``next_deadline()`` / ``handle_timeout(now)``; ``should_close`` tells the owner to close the
transport once the pending bytes are written. The table it runs is ``diameter.peer_table``
(RFC 6733 §5.6 rows above each entry); the watchdog (RFC 3539) is ``diameter.watchdog``.

Election (§5.6.4): the connection that holds a peer's state is registered on the node by the
peer's Origin-Host. A CER arriving on another connection from that host is an R-Conn-CER event of
the registered connection; during an election the incoming (responder) connection is linked to
the registered (initiator) one as its ``partner``, R-* actions act on the partner and I-* actions
on the initiator, and the winner takes the state over.
"""

from __future__ import annotations

import inspect
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

from diameter.answer import answer_to, error_answer
from diameter.application import PeerInfo
from diameter.capabilities import (
    admitted,
    advertised_applications,
    capabilities_avps,
    common_applications,
    inband_security_acceptable,
    name_matches,
    peer_info,
)
from diameter.codec import (
    FLAG_REQUEST,
    Avp,
    Message,
    Problem,
    decode_avps,
    decode_message,
    identity_lower,
)
from diameter.deferred import DeferredAnswer
from diameter.dictionary import DICTIONARY, AvpDef, CommandDef
from diameter.dictionary.base_rfc6733 import DisconnectCause, ResultCode
from diameter.errors import DecodeError, DiameterError, FramingError
from diameter.events import (
    AnswerReceived,
    AnyRequest,
    Event,
    LaneRequest,
    PeerDown,
    PeerUp,
    RequestReceived,
)
from diameter.framing import Framer
from diameter.lane import FIRST_FIELD_SLOT, ORIGIN_HOST_SLOT
from diameter.node import Node
from diameter.overload import OC_SUPPORTED_FEATURES, append_avps
from diameter.peek import command_name, result_code_of
from diameter.peer_identity import origin_host_matches
from diameter.peer_table import (
    CER,
    DPR,
    DWR,
    OPEN_STATES,
    PEER_DISC,
    RCV_MESSAGE,
    RECEIVE_EVENTS,
    TRANSITIONS,
    Action,
    PeerEvent,
    PeerState,
    Role,
)
from diameter.routing import first_problem
from diameter.validate import check_request
from diameter.watchdog import Watchdog, WatchdogAction, WatchdogTimer

__all__ = [
    "TRANSITIONS",
    "Peer",
    "PeerEvent",
    "PeerState",
    "Role",
    "call_handler",
    "command_name",
    "result_code_of",
]

log = logging.getLogger(__name__)

ORIGIN_HOST: Final = 264
_HEADER = struct.Struct("!IIIII")

# (state, role) whose Rcv-Message row is just "Process" in the same open state: an application
# request there is handed to _process_request without a trip through the table (same result).
_DIRECT_PROCESS = frozenset(
    (state, role)
    for state in OPEN_STATES
    for role in Role
    if TRANSITIONS.get((state, RCV_MESSAGE[role])) == ((Action.PROCESS,), state)
)
# States whose Send-Message row is just Snd-Message in the same state (R-Open, I-Open).
_DIRECT_SEND = frozenset(
    state
    for state in PeerState
    if TRANSITIONS.get((state, PeerEvent.SEND_MESSAGE)) == ((Action.SND_MESSAGE,), state)
)
_BASE_COMMANDS: Final = frozenset({CER, DWR, DPR})
_TOO_BUSY: Final = int(ResultCode.DIAMETER_TOO_BUSY)
_WORD = struct.Struct("!I")
_REQUEST_BIT: Final = FLAG_REQUEST << 24  # in the header's second word (flags, command code)

_OC_SUPPORTED_FEATURES_CODE: Final = OC_SUPPORTED_FEATURES.to_bytes(4, "big")
_NO_EVENTS: Final[list[Event]] = []  # receive_each's for a message that made none (never filled)
_CER_COMMAND = DICTIONARY.commands[(0, CER)]
_DWR_COMMAND = DICTIONARY.commands[(0, DWR)]
_DPR_COMMAND = DICTIONARY.commands[(0, DPR)]


# result_code_of() walks the AVP headers of every answer (1.5 us for an ECA). Answers built from
# pre-encoded blocks differ only in their header and leading Session-Id, and the walk finds nothing
# in a Session-Id: its result depends on the octets after it alone, remembered here (bounded).
_RESULT_CODES: Final[dict[bytes, int | None]] = {}
_RESULT_CODES_SIZE: Final = 1024


def _result_code(raw: bytes) -> int | None:
    """``result_code_of(raw)``, remembered by the octets after a leading Session-Id AVP."""
    # A leading Session-Id (code 263, no V flag), read octet by octet (compiled: no slice, no
    # method call).
    if (
        len(raw) >= 28
        and raw[20] == 0
        and raw[21] == 0
        and raw[22] == 1
        and raw[23] == 7
        and not raw[24] & 0x80
    ):
        length = (raw[25] << 16) | (raw[26] << 8) | raw[27]
        after = 20 + ((length + 3) & ~3)
        if length >= 8 and 20 + length <= len(raw) and after <= len(raw):
            tail = raw[after:]
            try:
                return _RESULT_CODES[tail]
            except KeyError:
                code = result_code_of(raw)
                if len(_RESULT_CODES) < _RESULT_CODES_SIZE:
                    _RESULT_CODES[tail] = code
                return code
    return result_code_of(raw)


def call_handler(peer: Peer, request: AnyRequest, now: float) -> Any:
    """The owner's side of Process (§5.6): call ``request``'s handler. A synchronous answer is
    sent at once, a handler that raises gets 5012 (RFC 6733 §7.1.5) and one that returns
    neither an answer nor an awaitable too: None is returned, nothing left to do. Otherwise the
    awaitable, for the owner to wait on and answer with ``Peer.send_answer``, or the
    :class:`~diameter.deferred.DeferredAnswer`, for the owner to bind."""
    try:
        result = request.call()
    except Exception as exc:
        log.exception("handler for %r failed", request.message)
        peer.fail_request(request, now, f"handler failed: {type(exc).__name__}")
        return None
    if isinstance(result, (bytes, Message)):
        peer.send_answer(request, result, now)  # synchronous: no task at all
        return None
    if isinstance(result, DeferredAnswer):
        return result  # given later from the handler's own callback: the owner binds it
    if not inspect.isawaitable(result):
        log.error("handler returned %r, neither an answer nor an awaitable", type(result))
        peer.fail_request(request, now, "handler returned no answer")
        return None
    return result


class Peer:
    """One transport connection and the RFC 6733 §5.6 state it carries."""

    def __init__(
        self,
        node: Node,
        role: Role,
        now: float,
        *,
        remote_address: tuple[str, int] | None = None,
        local_addresses: tuple[str, ...] = (),
        transport: str = "tcp",
        peer_host: str | None = None,
        certificate_names: tuple[str, ...] | None = None,
    ) -> None:
        self.node = node
        self.settings = node.settings
        self.role = role
        self.remote_address = remote_address
        self.local_addresses = local_addresses
        self.transport = transport
        # DNS names of the peer's verified TLS certificate (peer_identity); None without one.
        self.certificate_names = certificate_names
        self.state = PeerState.CLOSED
        self._direct = False  # (state, role) in _DIRECT_PROCESS, kept by _set_state
        self._direct_send = False  # state in _DIRECT_SEND, kept by _set_state
        self.info: PeerInfo | None = None
        self.should_close = False
        self.closed = False
        self.in_flight = 0
        self.disconnect_cause: int | None = None
        # Called when another connection's events changed this one (election, duplicate answer).
        self.on_wakeup: Callable[[], None] | None = None
        self.partner: Peer | None = None  # responder connection linked during an election
        self.owner: Peer | None = None  # the initiator connection we are linked to
        self._key = peer_host.lower() if peer_host else None
        self._framer = Framer(self.settings.max_message_size)
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._sent: dict[int, int] = {}  # Hop-by-Hop of our requests -> command code
        self._cer: Message | None = None
        self._pending_info: PeerInfo | None = None
        self._handover_to: Peer | None = None
        self._deadline: float | None = None
        self._down_reason = ""
        self._dpr_sent = False
        # Our DPA to the peer's DPR, held while requests it sent before are still being
        # answered (_act_snd_dpa): sent after their answers, or at the deadline.
        self._held_dpa: bytes | None = None
        # M bits set against the rules, collected by validation when not strict (RFC 6733 §4.5).
        self._deviations: list[AvpDef] | None = None if self.settings.strict_avp_flags else []
        self._deviations_logged: set[str] = set()
        self._discard_logged = False
        self._malformed_since = now
        # Octets fed to receive_each / handled so far (their difference waits to be served).
        self.received_bytes = 0
        self.processed_bytes = 0
        self._shed_credit = 0  # overload control's loss algorithm (_shed)
        self._malformed_count = 0
        self._base_refused = False  # a base request just answered with an error (_malformed)
        self._doic_peer: bool | None = None  # trusted for DOIC (_doic_trusted), once known
        self.watchdog = Watchdog(
            WatchdogTimer(self.settings.watchdog_interval, self.settings.watchdog_jitter),
            node.rng,
        )
        if role is Role.RESPONDER:
            # RFC 6733 §5.6.1: an incoming connection that sends no CER in time is closed.
            self._deadline = now + self.settings.cer_timeout
        node.observer.on_peer_state(self, None, self.state)  # a new connection: None -> Closed

    # -- public API -----------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def __repr__(self) -> str:
        who = self.info.origin_host if self.info else self.remote_address
        return f"<Peer {self.role.value} {who} {self.state.value}>"

    def start(self, now: float) -> list[Event]:
        """Initiator: we are about to connect (Start)."""
        if self._key is not None:
            self.node.peers.setdefault(self._key, self)
        self._fire(PeerEvent.START, now)
        return self._take_events()

    def connection_made(self, now: float) -> list[Event]:
        """Initiator: the transport connection is up (I-Rcv-Conn-Ack): send the CER."""
        self._fire(PeerEvent.I_RCV_CONN_ACK, now)
        return self._take_events()

    def connection_failed(self, now: float) -> list[Event]:
        """Initiator: the transport connection could not be made (I-Rcv-Conn-Nack)."""
        self._fire(PeerEvent.I_RCV_CONN_NACK, now)
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        """The transport connection went down (Peer-Disc)."""
        if self.owner is not None:
            owner, self.owner = self.owner, None
            owner._fire(PeerEvent.R_PEER_DISC, now)
            owner._wake()
            self._disconnect("peer disconnected", now)
        elif not self.closed:
            # In Closing the reason is the disconnect under way (DPR sent or received).
            closing = self.state is PeerState.CLOSING
            self._fire(PEER_DISC[self.role], now, reason="" if closing else "peer disconnected")
            self._disconnect("peer disconnected", now)
        return self._take_events()

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.closed:
            return []
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            # Whole messages before the bad bytes are processed first (they were well framed).
            for raw in exc.messages:
                if self.closed:
                    break
                self._receive(raw, now)
            if not self.closed:
                self._framing_error(exc, now)
            return self._take_events()
        if self._direct and self.node.overload.reduction:
            messages = self._shed(messages, now)
        for raw in messages:
            if self.closed:
                break
            self._receive(raw, now)
        return self._take_events()

    def receive_each(self, data: bytes, now: float) -> Iterator[list[Event]]:
        """``receive_data`` one message at a time: the events of each message (an empty list
        for none) are yielded as soon as it is processed, so that the owner can answer a
        request before the next message of the same read is decoded (objects stay
        short-lived; fewer garbage collections). The owner consumes the iterator to the end
        before feeding more data."""
        if self.closed:
            return
        error: FramingError | None = None
        self.received_bytes += len(data)
        try:
            messages: tuple[bytes, ...] | list[bytes] = self._framer.feed(data)
        except FramingError as exc:
            # Whole messages before the bad bytes are processed first (they were well framed).
            error, messages = exc, exc.messages
        node = self.node
        if self._direct and node.overload.reduction and messages:
            messages = self._shed(messages, now)
        for raw in messages:
            if self.closed:
                break
            size = len(raw)
            self.processed_bytes += size
            node.processed_bytes += size
            self._receive(raw, now)
            # Every message, events or none (a request discarded in Closing, an answer whose
            # Hop-by-Hop is unknown): the owner counts each against its read budget. Yielding
            # only events let a flood that makes none be served a whole read (libuv reads up
            # to 32 x 64 kB per callback) at a time, holding the loop: under load, a stop's
            # DPR deadline ran seconds late.
            yield self._take_events() if self._events else _NO_EVENTS
        if error is not None and not self.closed:
            self._framing_error(error, now)
        if self._events:
            yield self._take_events()

    def next_events(self) -> list[Event]:
        """Events produced by other connections' activity (see ``on_wakeup``)."""
        return self._take_events()

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        return data

    def next_deadline(self) -> float | None:
        deadline = self._deadline
        watchdog = self.watchdog.deadline if self.state in OPEN_STATES else None
        if watchdog is None:
            return deadline
        return watchdog if deadline is None or watchdog < deadline else deadline

    def handle_timeout(self, now: float) -> list[Event]:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if self._held_dpa is not None:
                self._send_held_dpa(now)  # answers still missing: the DPA waits no longer
            else:
                self._fire(PeerEvent.TIMEOUT, now)
        deadline = self._watchdog_deadline()
        if deadline is not None and now >= deadline:
            self._watchdog_actions(self.watchdog.expire(now), now)
        return self._take_events()

    def stop(self, cause: int, now: float) -> list[Event]:
        """Graceful stop (Stop): DPR when open, then close on DPA or after dpa_timeout."""
        self.disconnect_cause = int(cause)
        if not self.closed and self.state is not PeerState.CLOSING:
            if (self.state, PeerEvent.STOP) in TRANSITIONS:
                self._fire(PeerEvent.STOP, now)
            else:
                self._abort("stopped", now)
        return self._take_events()

    def send_request(self, message: Message, now: float) -> int:
        """Send-Message: a request of ours. Returns its Hop-by-Hop Identifier."""
        hop_by_hop = self.node.next_hop_by_hop()
        message.hop_by_hop = hop_by_hop
        if not message.end_to_end:
            message.end_to_end = self.node.next_end_to_end()
        message.flags |= FLAG_REQUEST
        self._send_message(message.encode(), message.command_code, hop_by_hop, now)
        return hop_by_hop

    def send_raw_request(self, raw: bytes | bytearray, now: float) -> int:
        """Send-Message for a pre-encoded request: only its Hop-by-Hop Identifier is rewritten."""
        hop_by_hop = self.node.next_hop_by_hop()
        data = bytes(raw[:12]) + hop_by_hop.to_bytes(4, "big") + bytes(raw[16:])
        self._send_message(data, int.from_bytes(data[5:8], "big"), hop_by_hop, now)
        return hop_by_hop

    def forget_request(self, hop_by_hop: int) -> None:
        """Stop waiting for the answer to one of our requests (timed out at the caller)."""
        self._sent.pop(hop_by_hop, None)

    @property
    def outstanding(self) -> int:
        """Our requests still waiting for an answer."""
        return len(self._sent)

    def send_answer(self, request: AnyRequest, answer: Message | bytes, now: float) -> None:
        """Answer a ``RequestReceived``; also remembered for duplicates (RFC 6733 §5.5.4)."""
        self._release(request)
        raw = answer if isinstance(answer, bytes) else answer.encode()
        if type(request) is not LaneRequest:
            # A lane request carries no OC-Supported-Features (diameter.lane never learns a
            # shape with one).
            raw = self._with_doic(request.message, request.raw, raw, now)
        self._write_answer(raw)
        if request.key is not None:
            # Duplicates that waited for this answer get it after the first copy's answer.
            self.node.duplicates.complete(request.key, raw, now)
        if self._held_dpa is not None and not self.in_flight:
            self._send_held_dpa(now)

    def fail_request(self, request: AnyRequest, now: float, text: str = "") -> None:
        """The handler failed: 5012 DIAMETER_UNABLE_TO_COMPLY (RFC 6733 §7.1.5)."""
        problem = Problem(ResultCode.DIAMETER_UNABLE_TO_COMPLY, None, text or None)
        body = request.application.error_answer_body
        self.send_answer(request, error_answer(request.message, self.node.identity, problem, body), now)

    def _with_doic(self, request: Message, raw: bytes, answer: bytes, now: float) -> bytes:
        """``answer`` with the DOIC AVPs when ``request`` carried OC-Supported-Features: RFC
        7683 §5.1.2 puts it in the answer of that transaction whatever the answer is (a MICA,
        an error, a 3004), and DOIC AVPs in no other. A substring test first (C speed; find,
        not ``in``: see overload.too_busy): the AVP look-up only when its code's octets are
        there."""
        if (
            raw.find(_OC_SUPPORTED_FEATURES_CODE) < 0
            or request.find(OC_SUPPORTED_FEATURES) is None
            or not self._doic_trusted()
        ):
            return answer
        doic = self.node.overload.doic_avps(now)
        return append_avps(answer, doic) if doic else answer

    def _doic_trusted(self) -> bool:
        """RFC 7683 §10.4: whether this peer is trusted for DOIC (``doic_peers``); the DOIC
        AVPs of another's requests are ignored, as if stripped."""
        trusted = self._doic_peer
        if trusted is None:
            patterns = self.node.overload.settings.doic_peers
            info = self.info
            trusted = not patterns or (
                info is not None and name_matches(info.origin_host, patterns)
            )
            if info is not None:
                self._doic_peer = trusted
        return trusted

    def abandon_request(self, request: AnyRequest) -> None:
        """The request will never be answered (its task was cancelled)."""
        self._release(request)
        if request.key is not None:
            self.node.duplicates.forget(request.key)

    # -- the table ------------------------------------------------------------------------------
    def _fire(self, event: PeerEvent, now: float, **ctx: Any) -> bool:
        row = TRANSITIONS.get((self.state, event))
        if row is None:
            log.debug("%r: no transition for %s in %s; ignored", self, event.value, self.state.value)
            return False
        actions, next_state = row
        for action in actions:
            _ACTIONS[action](self, now, ctx)
        target = self._handover_to
        if target is not None:
            # §5.6.4: the responder connection takes over the peer's state.
            self._handover_to = None
            self.partner = None
            target.owner = None
            if not self.closed:
                self._disconnect("the peer's other connection was kept (RFC 6733 §5.6.4)", now)
            target._set_state(next_state, now)
            target._wake()
        elif not self.closed:
            self._set_state(next_state, now)
        if ctx.pop("won", False):
            self._fire(PeerEvent.WIN_ELECTION, now)
        return True

    def _set_state(self, new: PeerState, now: float) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self._direct = (new, self.role) in _DIRECT_PROCESS
        self._direct_send = new in _DIRECT_SEND
        self.node.observer.on_peer_state(self, old, new)
        if new in OPEN_STATES and old not in OPEN_STATES and self.info is not None:
            key = self.info.origin_host.lower()
            if self._key is not None and self._key != key and self.node.peers.get(self._key) is self:
                del self.node.peers[self._key]
            self._key = key
            self.node.peers[key] = self
            self._deadline = None
            self._watchdog_actions(self.watchdog.connection_up(now), now)
            log.info("%r up: applications %s", self, sorted(self.info.applications))
            self._events.append(PeerUp(self.info))

    # -- receiving ------------------------------------------------------------------------------
    def _receive(self, raw: bytes, now: float) -> None:
        flags = raw[4]
        code = (raw[5] << 16) | (raw[6] << 8) | raw[7]
        is_request = bool(flags & FLAG_REQUEST)
        if is_request and self._direct and code not in _BASE_COMMANDS and self.owner is None:
            # The common case, an application request in R-Open/I-Open: the table's row would
            # be Process in the same state (see _DIRECT_PROCESS), the watchdog sees a non-DWA.
            self.node.observer.on_message("in", command_name(code, True), None)
            actions = self.watchdog.receive(False, now)
            if actions:
                self._watchdog_actions(actions, now)
            lanes = self.node.lanes
            if lanes.plans:
                if self._lane(raw, now):
                    lanes.taken += 1
                    return
            else:
                lanes.no_plan += 1
            self._process_request(raw, now)
            return
        if not is_request and self._direct and code not in _BASE_COMMANDS and self.owner is None:
            # An answer to one of our application requests, in the same open state: the same
            # steps as the table's row below (Process), without the trip through it (a client's
            # every answer: the simulator's MICAs).
            self.node.observer.on_message("in", command_name(code, False), None)
            hop_by_hop = int.from_bytes(raw[12:16], "big")
            if self._sent.get(hop_by_hop) != code:
                # RFC 6733 §3: an answer whose Hop-by-Hop we do not know is discarded.
                log.debug("%r: answer with unknown Hop-by-Hop %d discarded", self, hop_by_hop)
                return
            del self._sent[hop_by_hop]
            actions = self.watchdog.receive(False, now)
            if actions:
                self._watchdog_actions(actions, now)
            self._events.append(AnswerReceived(hop_by_hop, raw))
            return
        if self.owner is not None:
            log.debug("%r: message during an election ignored", self)
            return
        if self.role is Role.RESPONDER and self.state is PeerState.CLOSED:
            if is_request and code == CER:
                self._on_cer(raw, now)
            else:
                self._fire(PeerEvent.R_CONN_NON_CER, now)
            return
        self.node.observer.on_message("in", command_name(code, is_request), None)
        if not is_request:
            hop_by_hop = int.from_bytes(raw[12:16], "big")
            sent = self._sent.get(hop_by_hop)
            if sent != code:
                # RFC 6733 §3: an answer whose Hop-by-Hop we do not know is discarded.
                log.debug("%r: answer with unknown Hop-by-Hop %d discarded", self, hop_by_hop)
                return
            del self._sent[hop_by_hop]
        if self.state in OPEN_STATES:
            is_dwa = not is_request and code == DWR
            self._watchdog_actions(self.watchdog.receive(is_dwa, now), now)
        event = RECEIVE_EVENTS.get((self.role, is_request, code), RCV_MESSAGE[self.role])
        if self.state in (PeerState.WAIT_I_CEA, PeerState.WAIT_RETURNS):
            if event is PeerEvent.I_RCV_CEA:
                if not self._check_cea(raw, now):
                    event = PeerEvent.I_RCV_CEA_FAILED
            else:
                event = PeerEvent.I_RCV_NON_CEA
        if event in (PeerEvent.R_RCV_DPR, PeerEvent.I_RCV_DPR) and self._refuse_dpr(raw):
            self._malformed(now)
            return
        if event in (PeerEvent.R_RCV_DPA, PeerEvent.I_RCV_DPA):
            self._fire(event, now, raw=raw, reason="stopped: DPA received")
        else:
            self._fire(event, now, raw=raw)
        if self._base_refused:
            # A DWR or CER of an open connection answered with an error (the row's action
            # did): counted once the row is done, since past the limit a Stop follows.
            self._base_refused = False
            self._malformed(now)

    def _shed(self, messages: list[bytes] | tuple[bytes, ...], now: float) -> list[bytes]:
        """Overload control's share of this read refused before decoding: each application
        request is refused or admitted by the loss algorithm (RFC 7683 §6: a credit counter,
        the connection's share evenly spread) and refused ones get the pre-built 3004, written
        together; the rest (answers and base requests never refused) is returned in order to
        be processed. Decided per read, not per message: one refusal must cost much less
        than a classification, or an overloaded node could not even refuse. A DPR ends the
        refusals (in Closing later requests are dropped instead)."""
        node = self.node
        overload = node.overload
        reduction = overload.shares.get(self, overload.reduction)
        if not reduction or self.owner is not None or self.closed:
            return list(messages)
        credit = self._shed_credit
        too_busy = overload.too_busy
        doic_trusted = self._doic_trusted()
        refused: list[bytes] = []
        admitted: list[bytes] = []
        commands: dict[int, int] = {}
        octets = 0
        for index, raw in enumerate(messages):
            flags_code = _WORD.unpack_from(raw, 4)[0]
            code = flags_code & 0xFFFFFF
            if not flags_code & _REQUEST_BIT or code in _BASE_COMMANDS:
                if code == DPR and flags_code & _REQUEST_BIT:
                    # Closing follows: what comes after is dropped, not refused.
                    admitted += messages[index:]
                    break
                admitted.append(raw)  # never refused: answers, CER, DWR
                continue
            credit += reduction
            if credit < 100:
                admitted.append(raw)
                continue
            credit -= 100
            refused.append(too_busy(raw, now, doic_trusted))
            octets += len(raw)
            commands[code] = commands.get(code, 0) + 1
        self._shed_credit = credit
        if not refused:
            return admitted
        # Bookkeeping once for the refused requests: octets handled, the watchdog (any
        # received message resets Tw, RFC 3539 §3.4.1; one read, one time), counters.
        self.processed_bytes += octets
        node.processed_bytes += octets
        overload.refused += len(refused)
        actions = self.watchdog.receive(False, now)
        if actions:
            self._watchdog_actions(actions, now)
        observer = node.observer
        for code, count in commands.items():
            observer.on_message("in", command_name(code, True), None, count)
            observer.on_message(
                "out", command_name(code, False), _TOO_BUSY, count
            )
        self._out.append(b"".join(refused))
        return admitted

    def _on_cer(self, raw: bytes, now: float) -> None:
        """R-Conn-CER: Process-CER's checks decide between accepting and rejecting (§5.3)."""
        try:
            message = decode_message(raw)
        except DecodeError as exc:
            self._disconnect(f"undecodable CER: {exc}", now)
            return
        self._cer = message
        self.node.observer.on_message("in", "CER", None)
        problem = self._check(message, _CER_COMMAND)
        if problem is not None:
            return self._reject_cer(problem, now)
        origin_host: str = message.get("Origin-Host")
        origin_realm: str = message.get("Origin-Realm")
        remote_ip = self.remote_address[0] if self.remote_address else None
        why = admitted(self.settings, origin_host, origin_realm, remote_ip)
        if why is not None:
            # RFC 6733 §5.3: CER from an unknown peer -> 3010 (E bit), then close.
            problem = Problem(ResultCode.DIAMETER_UNKNOWN_PEER, None, why)
            return self._reject_cer(problem, now)
        names = self.certificate_names
        if (
            names is not None
            and self.settings.tls_verify_origin_host
            and not origin_host_matches(origin_host, names)
        ):
            # GSMA FS.19: the CER claims an identity its TLS certificate does not prove.
            why = f"Origin-Host {origin_host} is not a name of its TLS certificate ({', '.join(names)})"
            problem = Problem(ResultCode.DIAMETER_UNKNOWN_PEER, None, why)
            return self._reject_cer(problem, now)
        if self.transport != "tls" and not inband_security_acceptable(message):
            problem = Problem(
                ResultCode.DIAMETER_NO_COMMON_SECURITY, None, "in-band TLS (RFC 3588) not offered"
            )
            return self._reject_cer(problem, now)
        common = common_applications(self.node.applications, advertised_applications(message))
        if not common:
            problem = Problem(ResultCode.DIAMETER_NO_COMMON_APPLICATION, None, "no common application")
            return self._reject_cer(problem, now)
        self._pending_info = peer_info(
            message,
            common,
            remote_address=self.remote_address,
            transport=self.transport,
            role=self.role.value,
        )
        holder = self.node.peers.get(origin_host.lower())
        if holder is not None and holder is not self and holder.restarted(self._pending_info):
            # RFC 6733 §8.16: a new Origin-State-Id means the peer lost its state (rebooted);
            # its old connection is stale, not a rival for the election of §5.6.4.
            holder._disconnect("the peer restarted (new Origin-State-Id in a CER)", now)
            holder._wake()
            holder = None
        if holder is None or holder is self or holder.closed:
            self._fire(PeerEvent.R_CONN_CER, now)
        else:
            # The peer's state lives on another connection: this is its R-Conn-CER (§5.6.4).
            holder._fire(PeerEvent.R_CONN_CER, now, incoming=self)
            holder._wake()

    def restarted(self, incoming: PeerInfo | None) -> bool:
        """Whether a CER on another connection shows that this open peer has restarted."""
        info = self.info
        return (
            self.is_open
            and info is not None
            and incoming is not None
            and info.origin_state_id is not None
            and incoming.origin_state_id is not None
            and info.origin_state_id != incoming.origin_state_id
        )

    def _refuse_dpr(self, raw: bytes) -> bool:
        """A malformed DPR (no Disconnect-Cause: 5005; an unknown one: 5004) is answered with
        its error and changes nothing: the DPA told the peer that its DPR failed, so the
        connection stays open and a corrected DPR is answered (RFC 6733 §5.4, §7.1)."""
        request = decode_message(raw)
        problem = self._check(request, _DPR_COMMAND)
        if problem is None:
            return False
        self._write_answer(error_answer(request, self.node.identity, problem).encode())
        return True

    def _reject_cer(self, problem: Problem, now: float) -> None:
        self._fire(PeerEvent.R_CONN_CER_REJECTED, now, problem=problem)

    def _check_cea(self, raw: bytes, now: float) -> bool:
        """Process-CEA's checks: success Result-Code and a common application (§5.3)."""
        try:
            message = decode_message(raw)
            result = message.get("Result-Code")
            common = common_applications(self.node.applications, advertised_applications(message))
            info = peer_info(
                message,
                common,
                remote_address=self.remote_address,
                transport=self.transport,
                role=self.role.value,
            )
        except DecodeError as exc:
            self._down_reason = f"CEA undecodable: {exc}"
            return False
        if result != ResultCode.DIAMETER_SUCCESS:
            self._down_reason = f"CEA Result-Code {result}"
            return False
        if not common:
            self._down_reason = "CEA: no common application"
            return False
        if not info.origin_host:
            self._down_reason = "CEA without Origin-Host"
            return False
        self._pending_info = info
        return True

    def _framing_error(self, exc: FramingError, now: float) -> None:
        """RFC 6733 §2.1: unframeable data closes the connection; a request still gets its
        error answer (5011 / 5015) when its header was read and the peer is open."""
        header = exc.header
        if header is not None and header[4] & FLAG_REQUEST and self.state in OPEN_STATES:
            _, w1, app_id, hop_by_hop, end_to_end = _HEADER.unpack(header)
            # The AVPs that still parse give the answer its Session-Id and Proxy-Info (§6.2).
            avps, _ = decode_avps(exc.following, 0, len(exc.following))
            request = Message(w1 & 0xFFFFFF, app_id, w1 >> 24, hop_by_hop, end_to_end, avps)
            app = self.node.applications.get(app_id)
            body = app.error_answer_body if app else ()
            problem = Problem(exc.result_code, None, str(exc))
            answer = error_answer(request, self.node.identity, problem, body).encode()
            self._write_answer(self._with_doic(request, exc.following, answer, now))
        self._abort(f"framing error: {exc}", now)

    # -- application requests (Process) ---------------------------------------------------------
    def _process_request(self, raw: bytes, now: float) -> None:
        try:
            message = decode_message(raw)
        except DecodeError as exc:  # the framer already checked version and length
            self._disconnect(f"undecodable request: {exc}", now)
            return
        key: tuple[str, int] | None = None
        origin = message.find(ORIGIN_HOST)
        if origin is not None:
            try:
                key = (identity_lower(origin.data), message.end_to_end)
            except DecodeError:
                key = None
        if key is not None and self._duplicate(key, message.hop_by_hop, now):
            return
        common = self.info.applications if self.info else frozenset()
        deviations = self._deviations
        problem, app, command = first_problem(message, self.node, common, deviations)
        deviated = bool(deviations)
        if deviated:
            self._report_deviations()
        if problem is not None or app is None or command is None:
            assert problem is not None
            body = app.error_answer_body if app else ()
            answer = error_answer(message, self.node.identity, problem, body).encode()
            answer = self._with_doic(message, raw, answer, now)
            if key is not None:
                self.node.duplicates.complete(key, answer, now)
            self._write_answer(answer)
            self._malformed(now)
            return
        if self._too_busy(key, raw, message, now):
            return
        info = self.info
        assert info is not None
        code = message.command_code
        lane = app.lanes.get(code) if app.lanes else None
        if lane is not None and not deviated:
            # Well formed, every M bit as its rule says: a shape the lane may learn.
            self.node.lanes.learn(message, app, lane, self.settings, self.node.identity)
        self._events.append(RequestReceived(message, raw, info, app, app.handlers[code], key))

    def _lane(self, raw: bytes, now: float) -> bool:
        """An application request of a learnt shape (``diameter.lane``): the full path's
        checks and bookkeeping from its octets, handed to its lane. False: not taken (nothing
        done), the full path decides."""
        node = self.node
        found = node.lanes.match(raw, self.settings, node.identity)
        if found is None:
            return False
        plan, fields = found
        info = self.info
        app = plan.application
        if (
            info is None
            or plan.application_id not in info.applications
            or node.applications.get(plan.application_id) is not app
        ):
            node.lanes.application += 1
            return False  # 3007 or another application now: the full path answers
        end_to_end = (raw[16] << 24) | (raw[17] << 16) | (raw[18] << 8) | raw[19]
        origin = fields[ORIGIN_HOST_SLOT]
        key = None if origin is None else (identity_lower(origin), end_to_end)
        hop_by_hop = (raw[12] << 24) | (raw[13] << 16) | (raw[14] << 8) | raw[15]
        if key is not None and self._duplicate(key, hop_by_hop, now):
            return True
        if self._too_busy(key, raw, None, now):
            return True
        self._events.append(
            LaneRequest(raw, info, app, plan.lane.handler, key, fields[FIRST_FIELD_SLOT:])
        )
        return True

    def _duplicate(self, key: tuple[str, int], hop_by_hop: int, now: float) -> bool:
        """RFC 6733 §5.5.4: same End-to-End and Origin-Host, T flag or not: same answer. True
        when ``key`` is a duplicate (answered now, or when the first copy is)."""
        duplicate, replay = self.node.duplicates.begin(
            key, (self._deliver_duplicate, hop_by_hop), now
        )
        if duplicate and replay is not None:
            self._write_answer(replay)
        return duplicate

    def _too_busy(
        self, key: tuple[str, int] | None, raw: bytes, message: Message | None, now: float
    ) -> bool:
        """Past the bound on requests in flight the request is answered at once, not queued:
        3004 (E bit). Otherwise counted in flight (False)."""
        node = self.node
        if (
            self.in_flight >= self.settings.max_in_flight_per_peer
            or node.in_flight_total >= node.max_in_flight_total
        ):
            if key is not None:
                node.duplicates.forget(key)
            busy = Problem(ResultCode.DIAMETER_TOO_BUSY, None, "too many requests in flight")
            request = message if message is not None else decode_message(raw)
            answer = error_answer(request, node.identity, busy).encode()
            self._write_answer(self._with_doic(request, raw, answer, now))
            return True
        self.in_flight += 1
        node.in_flight_total += 1
        return False

    def _check(self, request: Message, command: CommandDef) -> Problem | None:
        """``check_request`` of a base request (CER, DWR, DPR), lenient on flags unless strict."""
        problem = check_request(
            request, command, DICTIONARY, self._deviations, self.settings.max_avps
        )
        if self._deviations:
            self._report_deviations()
        return problem

    def _report_deviations(self) -> None:
        """Count each M bit accepted against its rule; log each AVP once per connection."""
        deviations = self._deviations
        assert deviations is not None
        for defn in deviations:
            self.node.observer.on_avp_flag_deviation(defn.name)
            if defn.name not in self._deviations_logged:
                self._deviations_logged.add(defn.name)
                log.warning(
                    "%r: M bit set on %s, which must not have it (RFC 6733 §4.5); accepted "
                    "(diameter.strict_avp_flags is off)",
                    self,
                    defn.name,
                )
        deviations.clear()

    def _malformed(self, now: float) -> None:
        """A request refused by the checks of RFC 6733 §6.1/§7 (answered already): an
        application request, or a DWR, DPR or CER of an open connection. Past
        ``malformed_limit`` within ``malformed_window``: DPR with DO_NOT_WANT_TO_TALK_TO_YOU
        (§5.4.3), and closed on DPA or dpa_timeout (what it sends meanwhile is discarded, as in
        any Closing connection). The peer may connect again."""
        limit = self.settings.malformed_limit
        if limit <= 0:
            return
        if now - self._malformed_since > self.settings.malformed_window:
            self._malformed_since, self._malformed_count = now, 0
        self._malformed_count += 1
        if self._malformed_count <= limit:
            return
        if self.is_open:
            log.warning(
                "%r: %d malformed requests within %g s; disconnecting",
                self,
                self._malformed_count,
                self.settings.malformed_window,
            )
            self.node.malformed_disconnects += 1
            self.disconnect_cause = DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
            self._fire(PeerEvent.STOP, now)

    def _release(self, request: AnyRequest) -> None:
        self.in_flight -= 1
        self.node.in_flight_total -= 1

    def _deliver_duplicate(self, answer: bytes, hop_by_hop: int) -> None:
        if not self.closed:
            self._write_answer(answer)
            self._wake()

    # -- sending --------------------------------------------------------------------------------
    def _send_message(self, data: bytes, code: int, hop_by_hop: int, now: float) -> None:
        if self._direct_send:
            # R-Open/I-Open: the table's row is Snd-Message in the same state; its steps here.
            self._out.append(data)
            self.node.observer.on_message("out", command_name(code, True), None)
        elif not self._fire(PeerEvent.SEND_MESSAGE, now, data=data):
            raise DiameterError(f"{self!r} is not open", ResultCode.DIAMETER_UNABLE_TO_DELIVER)
        self._sent[hop_by_hop] = code

    def _write_answer(self, raw: bytes) -> None:
        if self.closed:
            return
        self._out.append(raw)
        code = (raw[5] << 16) | (raw[6] << 8) | raw[7]
        self.node.observer.on_message("out", command_name(code, False), _result_code(raw))

    def _send_own_request(self, code: int, avps: list[Avp], now: float) -> int:
        """CER, DWR, DPR: built here, sent outside of Send-Message."""
        hop_by_hop = self.node.next_hop_by_hop()
        identity = self.node.identity
        head = [Avp.new("Origin-Host", identity.origin_host), Avp.new("Origin-Realm", identity.origin_realm)]
        message = Message(
            code, 0, FLAG_REQUEST, hop_by_hop, self.node.next_end_to_end(), head + avps
        )
        self._out.append(message.encode())
        self._sent[hop_by_hop] = code
        self.node.observer.on_message("out", command_name(code, True), None)
        return hop_by_hop

    def _capabilities(self) -> list[Avp]:
        return capabilities_avps(
            self.node.identity,
            self.node.applications,
            self.local_addresses or self.node.identity.host_ip_addresses,
            self.node.origin_state_id,
        )

    # -- the watchdog ---------------------------------------------------------------------------
    def _watchdog_deadline(self) -> float | None:
        return self.watchdog.deadline if self.state in OPEN_STATES else None

    def _watchdog_actions(self, actions: list[WatchdogAction], now: float) -> None:
        for action in actions:
            if action is WatchdogAction.SEND_WATCHDOG:
                state = [Avp.new("Origin-State-Id", self.node.origin_state_id)]
                self._send_own_request(DWR, state, now)
            elif action is WatchdogAction.CLOSE_CONNECTION:
                # RFC 3539 §3.4.1: Tw expired twice without an answer.
                self._disconnect("watchdog: no answer to DWR", now)
            elif action is WatchdogAction.FAILOVER:
                log.warning("%r suspect: no DWA within Tw", self)
            elif action is WatchdogAction.FAILBACK:
                log.info("%r answering again", self)

    # -- closing --------------------------------------------------------------------------------
    def _disconnect(self, reason: str, now: float) -> None:
        if self.closed:
            return
        self.closed = True
        self.should_close = True
        self._deadline = None
        self.watchdog.connection_down(now)
        if self._key is not None and self.node.peers.get(self._key) is self:
            del self.node.peers[self._key]
        self._set_state(PeerState.CLOSED, now)
        self.node.observer.on_peer_state(self, PeerState.CLOSED, None)  # the connection is gone
        reason = reason or self._down_reason or "closed"
        log.info("%r down: %s", self, reason)
        self._events.append(PeerDown(reason))

    def _abort(self, reason: str, now: float) -> None:
        """Close outside of the table (stop mid-election, unframeable data): a responder
        connection waiting on this one for an election closes with it."""
        partner, self.partner = self.partner, None
        self._disconnect(reason, now)
        if partner is not None:
            partner.owner = None
            partner._disconnect(f"the peer's other connection closed: {reason}", now)
            partner._wake()

    def _wake(self) -> None:
        if self.on_wakeup is not None:
            self.on_wakeup()

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    # -- actions (RFC 6733 §5.6.3) --------------------------------------------------------------
    def _responder(self) -> Peer:
        return self.partner if self.partner is not None else self

    def _act_snd_conn_req(self, now: float, ctx: dict[str, Any]) -> None:
        # The transport connects; the connection attempt is bounded like the CEA wait.
        self._deadline = now + self.settings.cea_timeout

    def _act_r_accept(self, now: float, ctx: dict[str, Any]) -> None:
        incoming: Peer | None = ctx.get("incoming")
        if incoming is not None:
            self.partner = incoming
            incoming.owner = self

    def _act_process_cer(self, now: float, ctx: dict[str, Any]) -> None:
        responder = self._responder()
        responder.info = responder._pending_info
        responder._deadline = None

    def _act_r_snd_cea(self, now: float, ctx: dict[str, Any]) -> None:
        if self.state is PeerState.R_OPEN:
            # R-Open  R-Rcv-CER (the only row with R-Snd-CEA in R-Open): a CER on the open
            # connection, answered on its own.
            self._answer_cer_when_open(ctx["raw"])
            return
        responder = self._responder()
        assert responder._cer is not None
        answer = answer_to(
            responder._cer,
            self.node.identity,
            ResultCode.DIAMETER_SUCCESS,
            body=responder._capabilities(),
        )
        responder._write_answer(answer.encode())
        if responder is not self:
            self._handover_to = responder

    def _act_i_snd_cea(self, now: float, ctx: dict[str, Any]) -> None:
        # I-Open  I-Rcv-CER: answer with our capabilities again.
        self._answer_cer_when_open(ctx["raw"])

    def _answer_cer_when_open(self, raw: bytes) -> None:
        """A CER on an open connection gets a CEA with its own Hop-by-Hop and End-to-End (RFC
        6733 §3), after the checks of §5.3 (5005, 5010, ...). The connection stays open either
        way, as the table's row says; the capabilities agreed first stay in force."""
        request = decode_message(raw)  # the framer checked the header; AVP problems are below
        problem = self._check(request, _CER_COMMAND)
        if problem is None and not common_applications(
            self.node.applications, advertised_applications(request)
        ):
            problem = Problem(
                ResultCode.DIAMETER_NO_COMMON_APPLICATION, None, "no common application"
            )
        identity, body = self.node.identity, self._capabilities()
        if problem is None:
            answer = answer_to(request, identity, ResultCode.DIAMETER_SUCCESS, body=body)
        else:
            answer = error_answer(request, identity, problem, body)
            self._base_refused = True
        self._write_answer(answer.encode())

    def _act_r_snd_cea_error(self, now: float, ctx: dict[str, Any]) -> None:
        problem: Problem = ctx["problem"]
        assert self._cer is not None
        self._down_reason = f"CER rejected: {problem.result_code} {problem.error_message or ''}"
        answer = error_answer(self._cer, self.node.identity, problem, self._capabilities())
        self._write_answer(answer.encode())

    def _act_r_reject(self, now: float, ctx: dict[str, Any]) -> None:
        incoming: Peer = ctx["incoming"]
        incoming._disconnect("R-Reject: the peer already has a connection (RFC 6733 §5.6.4)", now)
        incoming._wake()

    def _act_i_snd_cer(self, now: float, ctx: dict[str, Any]) -> None:
        self._send_own_request(CER, self._capabilities(), now)
        self._deadline = now + self.settings.cea_timeout

    def _act_process_cea(self, now: float, ctx: dict[str, Any]) -> None:
        if self._pending_info is not None and self.state is not PeerState.I_OPEN:
            self.info = self._pending_info
            self._pending_info = None
            self._deadline = None

    def _act_elect(self, now: float, ctx: dict[str, Any]) -> None:
        """RFC 6733 §5.6.4: the higher Origin-Host (case-insensitive octets) wins; the winner
        closes the connection it initiated. Win-Election is issued once this row completes."""
        responder = self._responder()
        if responder is self or responder.info is None:
            return
        ours = self.node.identity.origin_host.lower().encode()
        theirs = responder.info.origin_host.lower().encode()
        if ours > theirs:
            ctx["won"] = True

    def _act_i_disc(self, now: float, ctx: dict[str, Any]) -> None:
        self._disconnect(ctx.get("reason", ""), now)

    def _act_r_disc(self, now: float, ctx: dict[str, Any]) -> None:
        responder = self._responder()
        if responder is not self:
            self.partner = None
            responder.owner = None
            responder._disconnect("election lost (RFC 6733 §5.6.4)", now)
            responder._wake()
        else:
            self._disconnect(ctx.get("reason", ""), now)

    def _act_cleanup(self, now: float, ctx: dict[str, Any]) -> None:
        self._disconnect(ctx.get("reason", ""), now)

    def _act_error(self, now: float, ctx: dict[str, Any]) -> None:
        if "raw" in ctx:
            reason = self._down_reason or "first message not a CEA"
        else:
            reason = {
                PeerState.WAIT_I_CEA: "no CEA in time",
                PeerState.WAIT_CONN_ACK: "connection not made in time",
                PeerState.WAIT_CONN_ACK_ELECT: "connection not made in time",
                PeerState.WAIT_RETURNS: "no CEA in time",
                PeerState.CLOSING: "stopped: no DPA within dpa_timeout" if self._dpr_sent else "",
            }.get(self.state, "")
        self._disconnect(reason, now)

    def _act_snd_dpr(self, now: float, ctx: dict[str, Any]) -> None:
        cause = self.disconnect_cause if self.disconnect_cause is not None else 0
        self._send_own_request(DPR, [Avp.new("Disconnect-Cause", cause)], now)
        self._deadline = now + self.settings.dpa_timeout
        self._dpr_sent = True
        self._down_reason = "stopped: DPR sent"

    def _act_snd_dpa(self, now: float, ctx: dict[str, Any]) -> None:
        # Well formed: _refuse_dpr answered a malformed DPR before the table saw it.
        request = decode_message(ctx["raw"])
        answer = answer_to(request, self.node.identity, ResultCode.DIAMETER_SUCCESS)
        self.disconnect_cause = request.get("Disconnect-Cause")
        self._down_reason = f"DPR received (Disconnect-Cause {self.disconnect_cause})"
        if self.in_flight:
            # RFC 6733 §5.4: the receiver of the DPA closes the connection. Requests it sent
            # before the DPR and still being answered would lose their answers: the DPA
            # follows them, waiting at most dpa_timeout.
            self._held_dpa = answer.encode()
            self._deadline = now + self.settings.dpa_timeout
            return
        self._write_answer(answer.encode())
        # RFC 6733 §5.4: the receiver of the DPA closes; we wait for that, or linger briefly.
        self._deadline = now + self.settings.disconnect_linger

    def _send_held_dpa(self, now: float) -> None:
        dpa, self._held_dpa = self._held_dpa, None
        assert dpa is not None
        self._write_answer(dpa)
        self._deadline = now + self.settings.disconnect_linger

    def _act_disc(self, now: float, ctx: dict[str, Any]) -> None:
        self._disconnect(ctx.get("reason", ""), now)

    def _act_snd_message(self, now: float, ctx: dict[str, Any]) -> None:
        self._out.append(ctx["data"])
        data: bytes = ctx["data"]
        self.node.observer.on_message("out", command_name(int.from_bytes(data[5:8], "big"), True), None)

    def _act_process(self, now: float, ctx: dict[str, Any]) -> None:
        raw: bytes = ctx["raw"]
        if raw[4] & FLAG_REQUEST:
            self._process_request(raw, now)
        else:
            self._events.append(AnswerReceived(int.from_bytes(raw[12:16], "big"), raw))

    def _act_process_answer(self, now: float, ctx: dict[str, Any]) -> None:
        if not ctx["raw"][4] & FLAG_REQUEST:
            self._act_process(now, ctx)
            return
        # Not processed, not answered: answers to requests received before stay on their way.
        level = logging.DEBUG if self._discard_logged else logging.INFO
        self._discard_logged = True
        log.log(level, "%r: request received while closing (DPR sent or answered); discarded", self)

    def _act_process_dwr(self, now: float, ctx: dict[str, Any]) -> None:
        request = decode_message(ctx["raw"])
        ctx["problem"] = self._check(request, _DWR_COMMAND)
        ctx["request"] = request

    def _act_snd_dwa(self, now: float, ctx: dict[str, Any]) -> None:
        request: Message = ctx["request"]
        problem: Problem | None = ctx["problem"]
        if problem is not None:
            answer = error_answer(request, self.node.identity, problem)
            self._base_refused = True
        else:
            state = [Avp.new("Origin-State-Id", self.node.origin_state_id)]
            answer = answer_to(request, self.node.identity, ResultCode.DIAMETER_SUCCESS, body=state)
        self._write_answer(answer.encode())

    def _act_process_dwa(self, now: float, ctx: dict[str, Any]) -> None:
        # The watchdog already saw the DWA (every received message is fed to it).
        return None


_ACTIONS: dict[Action, Callable[[Peer, float, dict[str, Any]], None]] = {
    Action.I_SND_CONN_REQ: Peer._act_snd_conn_req,
    Action.R_ACCEPT: Peer._act_r_accept,
    Action.R_REJECT: Peer._act_r_reject,
    Action.PROCESS_CER: Peer._act_process_cer,
    Action.I_SND_CER: Peer._act_i_snd_cer,
    Action.R_SND_CEA: Peer._act_r_snd_cea,
    Action.I_SND_CEA: Peer._act_i_snd_cea,
    Action.R_SND_CEA_ERROR: Peer._act_r_snd_cea_error,
    Action.CLEANUP: Peer._act_cleanup,
    Action.ERROR: Peer._act_error,
    Action.PROCESS_CEA: Peer._act_process_cea,
    Action.SND_DPR: Peer._act_snd_dpr,
    Action.SND_DPA: Peer._act_snd_dpa,
    Action.I_DISC: Peer._act_i_disc,
    Action.R_DISC: Peer._act_r_disc,
    Action.DISC: Peer._act_disc,
    Action.ELECT: Peer._act_elect,
    Action.SND_MESSAGE: Peer._act_snd_message,
    Action.PROCESS: Peer._act_process,
    Action.PROCESS_ANSWER: Peer._act_process_answer,
    Action.PROCESS_DWR: Peer._act_process_dwr,
    Action.SND_DWA: Peer._act_snd_dwa,
    Action.PROCESS_DWA: Peer._act_process_dwa,
}
