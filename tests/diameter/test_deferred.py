"""DeferredAnswer: an answer a handler gives later from a callback of its own, sent by the
connection as it is given (no future, no task, no event loop callback per request)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from diameter.answer import answer_to
from diameter.application import PeerInfo
from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, FLAG_RETRANSMIT, Avp, Message
from diameter.deferred import DeferredAnswer
from diameter.node import Node
from diameter.transport import Server
from tests.diameter.test_peer_helpers import ECR, S13, base_request, ecr, eir_node
from tests.diameter.test_transport import RawPeer, count_writes, start_server, wait_for

_BODY = [Avp.new("Auth-Session-State", 1)]

# An operation on a DeferredAnswer: bind it, give it an answer (numbered; None is what a
# handler gives by mistake, which the owner must still get, to answer 5012), or withdraw it.
_OPERATIONS = st.lists(
    st.one_of(st.just(("bind", 0)), st.just(("withdraw", 0)),
              st.tuples(st.just("give"), st.one_of(st.none(), st.integers(1, 5)))),
    max_size=8,
)


@given(_OPERATIONS)
def test_an_answer_reaches_its_owner_once_and_only_if_given_first(
    operations: list[tuple[str, int | None]],
) -> None:
    # The model: the first of give/withdraw settles it; the owner bound (before or after) gets
    # the first answer given, once, and nothing if it was withdrawn first.
    deferred = DeferredAnswer()
    delivered: list[object] = []
    bound = False
    first: tuple[str, int | None] | None = None
    for operation, value in operations:
        if operation == "bind":
            if bound:
                continue  # an owner binds once
            bound = True
            deferred.bind(lambda d: delivered.append(d.answer), "request")
            assert deferred.request == "request"
        elif operation == "give":
            deferred.give(value)
        else:
            deferred.withdraw()
        if first is None and operation != "bind":
            first = (operation, value)
    expected = [first[1]] if bound and first is not None and first[0] == "give" else []
    assert delivered == expected
    assert deferred.settled is (first is not None)


async def deferring_server() -> tuple[Server, Node, list[tuple[Message, DeferredAnswer]], RawPeer]:
    """A server whose ECR handler defers every answer (the list of them, in arrival order),
    and a peer past its capabilities exchange."""
    node = eir_node({})
    waiting: list[tuple[Message, DeferredAnswer]] = []

    def handle(request: Message, peer: PeerInfo) -> DeferredAnswer:
        answer = DeferredAnswer()
        waiting.append((request, answer))
        return answer

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    server, port = await start_server(node)
    raw = await RawPeer.open(port)
    await raw.handshake()
    return server, node, waiting, raw


async def test_deferred_answers_given_together_are_written_together() -> None:
    server, node, waiting, raw = await deferring_server()
    try:
        (connection,) = server.connections
        writes = count_writes(connection)
        for i in range(12):
            raw.send(ecr(hop_by_hop=i + 1, end_to_end=i + 1))
        await wait_for(lambda: len(waiting) == 12)
        assert server.in_flight == 12 and len(connection.deferred) == 12
        assert not connection.tasks  # no future, no task
        for request, answer in waiting[:10]:  # one callback settles ten
            answer.give(answer_to(request, node.identity, 2001,
                                  body=[Avp.new("Auth-Session-State", 1)]))
        answers = [await raw.read() for _ in range(10)]
        assert [a.hop_by_hop for a in answers if a] == list(range(1, 11))
        assert len(writes) == 1  # given together, written together
        assert server.in_flight == 2 and len(connection.deferred) == 2
        waiting[10][1].give(answer_to(waiting[10][0], node.identity, 2001,
                                      body=[Avp.new("Auth-Session-State", 1)]))
        late = await raw.read()
        assert late is not None and late.hop_by_hop == 11
    finally:
        await server.stop(timeout=0.3)
    # The stop waited its time, then withdrew the one never given: abandoned, not answered.
    assert server.in_flight == 0 and not connection.deferred and waiting[11][1].settled
    waiting[11][1].give(b"too late")  # nobody to send it to: nothing happens


async def test_a_stop_waits_for_deferred_answers_before_its_dpr() -> None:
    server, node, waiting, raw = await deferring_server()
    raw.send(ecr(hop_by_hop=7, end_to_end=7))
    await wait_for(lambda: len(waiting) == 1)
    request, answer = waiting[0]
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, answer.give, answer_to(request, node.identity, 2001,
                                                 body=[Avp.new("Auth-Session-State", 1)]))
    stopping = asyncio.create_task(server.stop(timeout=4.0))
    first = await raw.read()
    assert first is not None and first.hop_by_hop == 7 and first.get("Result-Code") == 2001
    dpr = await raw.read()
    assert dpr is not None and dpr.command_code == 282 and dpr.is_request
    raw.close()
    await stopping
    assert server.in_flight == 0


async def test_a_deferred_non_answer_gets_5012_and_the_rest_are_sent() -> None:
    # The compiled sender (diameter.reads.DeferredAnswers) checks what it is given: neither
    # bytes nor a Message is 5012 DIAMETER_UNABLE_TO_COMPLY (RFC 6733 §7.1.5), and the answers
    # given beside it still go out, written together.
    server, node, waiting, raw = await deferring_server()
    try:
        (connection,) = server.connections
        writes = count_writes(connection)
        for i in range(3):
            raw.send(ecr(hop_by_hop=i + 1, end_to_end=i + 1))
        await wait_for(lambda: len(waiting) == 3)
        for n, (request, answer) in enumerate(waiting):
            answer.give(42 if n == 1 else answer_to(request, node.identity, 2001,
                                                     body=[Avp.new("Auth-Session-State", 1)]))
        answers = [await raw.read() for _ in range(3)]
        assert {(a.hop_by_hop, a.get("Result-Code")) for a in answers if a} == {
            (1, 2001), (2, 5012), (3, 2001)}
        assert len(writes) == 1 and not connection.deferred and server.in_flight == 0
    finally:
        await server.stop(timeout=0.3)


async def test_a_dpr_is_answered_after_the_answers_of_the_requests_before_it() -> None:
    # RFC 6733 §5.4: the DPR's sender closes the connection once it has our DPA. A DPA written
    # while earlier requests were still being answered (a check waiting for the registry or the
    # shared clone count) lost their answers, the MME left to time out on each. The DPA waits
    # for them (at most dpa_timeout), then goes out after them.
    server, node, waiting, raw = await deferring_server()
    try:
        for i in range(2):
            raw.send(ecr(hop_by_hop=i + 1, end_to_end=i + 1))
        await wait_for(lambda: len(waiting) == 2)
        raw.send(base_request(282, 9, [Avp.new("Disconnect-Cause", 0)]))
        await asyncio.sleep(0.1)
        for request, answer in waiting:
            answer.give(answer_to(request, node.identity, 2001, body=_BODY))
        received = [await raw.read() for _ in range(3)]
        assert [(m.command_code, m.hop_by_hop) for m in received if m] == [
            (ECR, 1), (ECR, 2), (282, 9)]
        assert await raw.closed()  # then closed (our linger), the DPR's sender closing first
    finally:
        raw.close()
        await server.stop(timeout=0.3)


async def test_a_dpa_held_for_answers_goes_out_after_dpa_timeout() -> None:
    server, node, waiting, raw = await deferring_server()
    (connection,) = server.connections
    assert connection.peer is not None
    connection.peer.settings = replace(node.settings, dpa_timeout=0.3)
    try:
        raw.send(ecr(hop_by_hop=1, end_to_end=1))
        await wait_for(lambda: len(waiting) == 1)
        raw.send(base_request(282, 9, [Avp.new("Disconnect-Cause", 0)]))
        dpa = await raw.read()  # the answer never given: the DPA all the same, in time
        assert dpa is not None and (dpa.command_code, dpa.hop_by_hop) == (282, 9)
        assert dpa.get("Result-Code") == 2001
    finally:
        raw.close()
        await server.stop(timeout=0.3)


async def test_a_non_answer_given_before_the_handler_returns_gets_5012() -> None:
    # Given at once (the count it waited for was already known), and not an answer: bound
    # afterwards, it was never sent, the MME left to time out and its place in flight kept for
    # good; given after the bind, the same value was answered 5012. Both are 5012 now.
    node = eir_node({})

    def handle(request: Message, peer: PeerInfo) -> DeferredAnswer:
        answer = DeferredAnswer()
        answer.give(None)
        return answer

    node.applications[S13] = replace(node.applications[S13], handlers={ECR: handle})
    server, port = await start_server(node)
    raw = await RawPeer.open(port)
    try:
        await raw.handshake()
        raw.send(ecr(hop_by_hop=5, end_to_end=5))
        answer = await raw.read()
        assert answer is not None and answer.hop_by_hop == 5
        assert answer.get("Result-Code") == 5012 and server.in_flight == 0
    finally:
        raw.close()
        await server.stop(timeout=0.3)


async def test_a_lost_connections_deferred_answers_release_and_answer_its_retransmissions(
) -> None:
    """The connection is lost with answers still to be given. When given, each still releases
    its request's place in flight, and is what a copy sent again on another connection (T flag,
    RFC 6733 §5.5.4) is answered: withdrawn at the loss, they left the node's count of requests
    in flight up for good (every lost connection with checks waiting for Redis took some of
    max_in_flight_total, towards 3004 for every peer), and their first copies in progress, the
    copies sent again waiting for them for ever."""
    server, node, waiting, raw = await deferring_server()
    port = server.sockets[0][2]
    try:
        for i in range(3):
            raw.send(ecr(hop_by_hop=i + 1, end_to_end=100 + i))
        await wait_for(lambda: len(waiting) == 3)
        raw.close()
        await wait_for(lambda: not server.connections)
        again = await RawPeer.open(port)
        await again.handshake()
        # Sent again before the answer is given (the first copy still in progress)...
        again.send(ecr(hop_by_hop=7, end_to_end=100,
                       flags=FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT))
        await asyncio.sleep(0.05)
        for request, answer in waiting:
            answer.give(answer_to(request, node.identity, 2001, body=_BODY))
        assert server.in_flight == 0 and len(waiting) == 3  # no second check for it
        first = await again.read()
        assert first is not None and first.hop_by_hop == 7 and first.get("Result-Code") == 2001
        # ... and after: the answer recorded for it.
        again.send(ecr(hop_by_hop=8, end_to_end=101,
                       flags=FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT))
        second = await again.read()
        assert second is not None and second.hop_by_hop == 8
        assert second.get("Result-Code") == 2001 and len(waiting) == 3
        again.close()
    finally:
        await server.stop(timeout=0.3)
