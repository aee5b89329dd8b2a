"""The fuzz target: one input is the byte stream an admitted MME sends to the EIR.

``Harness.run(data)`` drives everything a received byte goes through in the gateway, sans-IO:

1. framing (``Framer``): fed whole and in two pieces, it finds the same messages and the same
   error (RFC 6733 §2.1: framing does not depend on how the bytes were split);
2. decoding and validation of each framed message (``decode_message``, ``check_request`` or the
   answer's grammar, ``routing.first_problem``): a problem is data, never an exception other than
   ``DiameterError``; a message decoded without a problem encodes back to the same octets;
3. a responder ``Peer`` opened by a valid CER, then fed the input: its requests go to the S13
   handler of the embedded default configuration (registry off, no observation log) as the
   transport would hand them; every octet the peer writes back must frame, decode without a
   problem, answer a request of the input (same Hop-by-Hop) and satisfy its answer grammar
   (RFC 6733 §7.2, TS 29.272 §7.2.20). The handler must never fail (5012 "classification failed").

Any other exception, or a broken property (AssertionError), is a finding.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
from typing import Any

from diameter.codec import FLAG_ERROR, FLAG_REQUEST, Avp, Message, decode_message
from diameter.dictionary import DICTIONARY
from diameter.errors import DiameterError, FramingError
from diameter.events import AnyRequest, LaneRequest, RequestReceived
from diameter.framing import DEFAULT_MAX_MESSAGE_SIZE, Framer
from diameter.node import Node
from diameter.peer import Peer, Role
from diameter.routing import first_problem
from diameter.validate import check_avps, check_request
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.metrics import GatewayMetrics
from gateway.s13 import MeIdentityCheck

MME_HOST = "mme.fuzz.test"
REMOTE = ("127.0.0.1", 3868)
S13_APPLICATION_ID = 16777252
_ECHOED = frozenset({263, 284})  # Session-Id, Proxy-Info


def _cer() -> bytes:
    message = Message(257, 0, FLAG_REQUEST, 1, 1)
    message.add("Origin-Host", MME_HOST).add("Origin-Realm", "fuzz.test")
    message.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 10415)
    message.add("Product-Name", "fuzz")
    message.add("Auth-Application-Id", S13_APPLICATION_ID)
    return message.encode()


def _frame(
    data: bytes, pieces: int, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[list[bytes], FramingError | None]:
    framer, messages = Framer(max_size), []
    step = max(1, -(-len(data) // pieces))
    try:
        for start in range(0, len(data), step):
            messages += framer.feed(data[start : start + step])
    except FramingError as exc:
        return messages + list(exc.messages), exc
    return messages, None


class Harness:
    """The gateway's S13 application on the embedded default configuration, built once."""

    def __init__(self) -> None:
        self._state = tempfile.TemporaryDirectory(prefix="eir-fuzz-")
        env = {
            "EIR_STATE_DIRECTORY": self._state.name,
            "EIR_OBSERVATIONS_ENABLED": "false",
            "EIR_REGISTRY_BACKEND": "none",
            "EIR_LISTS_POLL_INTERVAL_SECONDS": "0",
        }
        self.config = load_config(None, env=env)
        classifier = Classifier.from_config(self.config, None)
        s13 = MeIdentityCheck(self.config.peer.identity, classifier, GatewayMetrics())
        self.application = s13.application()
        self._cer = _cer()
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        self._loop.close()
        self._state.cleanup()

    def run(self, data: bytes) -> None:
        limit = self.config.peer.max_message_size  # as the peer frames them
        messages, error = _frame(data, 1, limit)
        split, split_error = _frame(data, 2, limit)
        assert split == messages, "framing depends on how the bytes were split"
        assert (error is None) == (split_error is None)
        hops = {int.from_bytes(raw[12:16], "big") for raw in messages}
        if error is not None and error.header is not None:
            hops.add(int.from_bytes(error.header[12:16], "big"))
        node = self._node()
        for raw in messages:
            self._check_message(raw, node)
        self._check_peer(data, hops)

    def _node(self) -> Node:
        # A node per input: its duplicate cache and peer registry start empty every time.
        return Node(self.config.peer, [self.application], origin_state_id=1)

    def _check_message(self, raw: bytes, node: Node) -> None:
        try:
            message = decode_message(raw)
        except DiameterError:
            return
        if message.problem is None:
            again = decode_message(message.encode())
            assert [_key(a) for a in again.avps] == [_key(a) for a in message.avps]
        command = DICTIONARY.command(message.application_id, message.command_code)
        if command is None:
            return
        if message.is_request:
            check_request(message, command)
            first_problem(message, node, frozenset({S13_APPLICATION_ID}))
        else:
            check_avps(message.avps, command.answer, DICTIONARY, ())

    def _check_peer(self, data: bytes, hops: set[int]) -> None:
        node = self._node()
        peer = Peer(node, Role.RESPONDER, 0.0, remote_address=REMOTE)
        peer.receive_data(self._cer, 0.0)
        cea = decode_message(peer.data_to_send())
        assert cea.get("Result-Code") == 2001, cea
        for event in peer.receive_data(data, 1.0):
            if isinstance(event, (RequestReceived, LaneRequest)):
                peer.send_answer(event, self._handle(event), 1.0)
        out, error = _frame(peer.data_to_send(), 1)
        assert error is None, f"the peer wrote unframeable bytes: {error}"
        for raw in out:
            self._check_output(raw, hops)
        peer.connection_lost(2.0)

    def _handle(self, event: AnyRequest) -> Message | bytes:
        result: Any = event.call()
        if inspect.isawaitable(result):
            result = self._loop.run_until_complete(result)
        assert isinstance(result, (Message, bytes)), result
        return result

    def _check_output(self, raw: bytes, hops: set[int]) -> None:
        answer = decode_message(raw)
        assert answer.problem is None, (answer.problem, raw.hex())
        assert not answer.flags & FLAG_REQUEST, "the EIR sent a request"
        assert answer.hop_by_hop in hops, "an answer to a request nobody sent"
        assert answer.get("Error-Message", None) != "classification failed"
        assert answer.find(268) is not None or answer.find(297) is not None, answer
        command = DICTIONARY.command(answer.application_id, answer.command_code)
        result = answer.get("Result-Code", None)
        if command is None or answer.flags & FLAG_ERROR or (result is not None and result >= 3000):
            # RFC 6733 §7.2: an error answer may lack what its command's CCF requires (a
            # request without a readable Session-Id gets an answer without one, §6.2).
            grammar = DICTIONARY.answer_message
        else:
            grammar = command.answer
        problem = check_avps(answer.avps, grammar, DICTIONARY, ())
        if problem is not None and problem.failed_avp is not None:
            # Session-Id and Proxy-Info are copied octet for octet (RFC 6733 §6.2): what the
            # request got wrong in them comes back as it was sent; the rest is judged.
            assert problem.failed_avp.code in _ECHOED, (problem, answer)
        else:
            assert problem is None, (problem, answer)


def _key(avp: Avp) -> tuple[int, int, int, bytes]:
    return (avp.code, avp.flags, avp.vendor, avp.data)
