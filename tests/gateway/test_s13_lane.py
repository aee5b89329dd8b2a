"""S13's lane (gateway.s13.MeIdentityCheck.handle_lane over diameter.lane) answers byte for byte
as the full path does: a differential property over generated MICRs on two gateways built
alike from the embedded default configuration, one with the lane and one without."""

from __future__ import annotations

import asyncio
import inspect
import random
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diameter.codec import Avp, Message
from diameter.events import LaneRequest, RequestReceived
from diameter.lane import LEARN_AFTER
from diameter.node import Node
from diameter.peer import Peer, Role
from gateway import registry_source
from gateway.classify import Classifier
from gateway.config import load_config
from gateway.imei import luhn_check_digit
from gateway.metrics import GatewayMetrics
from gateway.s13 import MeIdentityCheck
from tests.diameter.builders import micr

S13, TGPP, ECR = 16777252, 10415, 324
A = Avp.new


class Gateway:
    """The S13 application on the embedded default configuration, behind a sans-IO peer."""

    def __init__(self, state: str, lane: bool) -> None:
        config = load_config(None, env={"EIR_STATE_DIRECTORY": state,
                                        "EIR_OBSERVATIONS_ENABLED": "false"})
        classifier = Classifier.from_config(config, registry_source.build(config.registry))
        self.s13 = MeIdentityCheck(config.peer.identity, classifier, GatewayMetrics())
        app = self.s13.application()
        if not lane:
            app = replace(app, lanes={})
        self.identity = config.peer.identity
        node = Node(config.peer, [app], rng=random.Random(1), origin_state_id=1)
        self.peer = Peer(node, Role.RESPONDER, 0.0, remote_address=("127.0.0.1", 1))
        self.peer.receive_data(cer(), 0.0)
        assert self.peer.is_open, self.peer.data_to_send()
        self.peer.data_to_send()
        self.lane_taken = 0

    async def serve(self, raw: bytes, now: float) -> bytes:
        for event in self.peer.receive_data(raw, now):
            if isinstance(event, (RequestReceived, LaneRequest)):
                self.lane_taken += isinstance(event, LaneRequest)
                result: Any = event.call()
                if inspect.isawaitable(result):
                    result = await result
                self.peer.send_answer(event, result, now)
        return self.peer.data_to_send()


def cer() -> bytes:
    m = Message(257, 0, 0x80, 1, 1)
    m.add("Origin-Host", "mme.test").add("Origin-Realm", "test")
    m.add("Host-IP-Address", "127.0.0.1").add("Vendor-Id", 0).add("Product-Name", "x")
    m.add("Vendor-Specific-Application-Id",
          [A("Vendor-Id", TGPP), A("Auth-Application-Id", S13)])
    return m.encode()


def known_imei(n: int) -> str:
    body = f"3520990{n % 2}{n % 1_000_000:06d}"
    return body + str(luhn_check_digit(body))


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[Gateway, Gateway]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        yield Gateway(a, True), Gateway(b, False)


SHAPES = ("sv+imsi", "imsi", "sv", "host")


def base(shape: str, e2e: int, imei: str, sv: str | None = "01", imsi: str | None = None,
         **kw: Any) -> bytes:
    imsi = imsi if imsi is not None else f"00101{e2e:010d}"
    kw.setdefault("destination_realm", "localdomain")
    if shape == "sv+imsi":
        return micr(e2e, imei, sv, imsi, **kw)
    if shape == "imsi":
        return micr(e2e, imei, None, imsi, **kw)
    if shape == "sv":
        return micr(e2e, imei, sv, None, **kw)
    kw.setdefault("destination_host", "eir.localdomain")
    return micr(e2e, imei, sv, imsi, **kw)


imeis = st.one_of(
    st.integers(0, 10**6).map(known_imei),  # well formed, a known TAC
    st.text("0123456789", min_size=13, max_size=17),  # any length, any check digit
    st.text(min_size=0, max_size=18),  # anything, non-ASCII too
)
svs = st.one_of(st.text("0123456789", min_size=2, max_size=2), st.text(max_size=3))
extras = st.sampled_from([
    (), (), (), (), (),  # mostly the learnt shapes
    (A("Proxy-Info", [A("Proxy-Host", "relay.test"), A("Proxy-State", b"\x01")]),),
    (A("DRMP", 5),),
    (A("Route-Record", "relay.test"),),
    (Avp(9999, 0x40, 0, b"x"),),  # unknown, M bit: 5001
    (Avp(9999, 0x00, 0, b"x"),),  # unknown, ignored
])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_the_lane_answers_byte_for_byte_as_the_full_path(
    gateways: tuple[Gateway, Gateway], data: st.DataObject
) -> None:
    with_lane, without = gateways
    now = asyncio.get_running_loop().time()
    e2e = data.draw(st.integers(1, 2**32 - 1), "e2e")  # repeats are duplicates, the same
    shape = data.draw(st.sampled_from(SHAPES), "shape")
    if with_lane.peer.node.lanes.plans == []:
        for n in range(LEARN_AFTER):  # every shape learnt, as steady traffic teaches them
            for i, s in enumerate(SHAPES):
                raw = base(s, 10 + n * len(SHAPES) + i, known_imei(n))
                assert await with_lane.serve(raw, now) == await without.serve(raw, now)
        assert len(with_lane.peer.node.lanes.plans) == len(SHAPES)
    imei, sv = data.draw(imeis, "imei"), data.draw(svs, "sv")
    imsi = data.draw(st.one_of(st.none(), st.text(max_size=16)), "imsi")
    extra = data.draw(extras, "extra")
    flags = data.draw(st.sampled_from([0xC0, 0xC0, 0xD0, 0x80]), "flags")
    host = data.draw(st.sampled_from(["eir.localdomain", "EIR.localdomain", "other.test"]), "host")
    session = data.draw(st.sampled_from(["", "s;\u00e9", "x" * 301]), "session")
    kw: dict[str, Any] = {"destination_host": host} if shape == "host" else {}
    raw = base(shape, e2e, imei, sv, imsi, extra=extra, flags=flags, session=session, **kw)
    edits = data.draw(st.lists(st.tuples(st.integers(4, len(raw) - 1), st.integers(0, 255)),
                               max_size=2), "edits")
    wire = bytearray(raw)
    for offset, value in edits:
        wire[offset] = value
    raw = bytes(wire)
    ours, theirs = await with_lane.serve(raw, now), await without.serve(raw, now)
    assert ours == theirs
    assert with_lane.peer.closed == without.peer.closed


async def test_steady_micrs_take_the_lane(gateways: tuple[Gateway, Gateway]) -> None:
    with_lane, without = gateways
    now = asyncio.get_running_loop().time()
    before = with_lane.lane_taken
    for n in range(3 * LEARN_AFTER):
        raw = micr(5_000_000 + n, known_imei(7_000 + n), "07", f"00101{n:010d}",
                   destination_realm="localdomain")
        assert await with_lane.serve(raw, now) == await without.serve(raw, now)
    assert with_lane.lane_taken - before >= 2 * LEARN_AFTER
    assert without.lane_taken == 0
