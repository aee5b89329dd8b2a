"""RFC 6733 / TS 29.272 edge cases against a real gateway on loopback, driven with raw bytes.

Each peer here is a bare asyncio stream (no Diameter stack of ours on the MME side), so the
gateway sees exactly the octets written: missing AVPs, wrong flags, bad lengths, odd orders.
Expected answers cite the clause they follow; the default config serves realm ``localdomain``
as ``eir.localdomain``.
"""

from __future__ import annotations

import asyncio
import itertools

from diameter.codec import Avp, Message, decode_message
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from gateway.service import Gateway
from tests.e2e.conftest import StartGateway

CER, DWR, DPR, ECR = 257, 280, 282, 324
RESULT_CODE, FAILED_AVP, ERROR_MESSAGE, EQUIPMENT_STATUS = 268, 279, 281, 1445
SESSION_ID, PROXY_INFO, ORIGIN_STATE_ID = 263, 284, 278
R, P, E, T = 0x80, 0x40, 0x20, 0x10
IMEI_OK = "35209900123456"  # WHITELISTED in the default config
IMEI_BLACK = "35693803564380"  # BLACKLISTED in the default config

_ids = itertools.count(0x1000)


class RawPeer:
    """A TCP peer that writes exactly the bytes it is given and reads whole messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, gateway: Gateway) -> RawPeer:
        _, host, port = gateway.diameter_sockets[0]
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, data: Message | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, Message) else data)

    async def recv(self, timeout: float = 5.0) -> Message | None:
        """The next message, or None when the gateway closed the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(20), timeout)
            length = int.from_bytes(head[1:4], "big")
            body = await asyncio.wait_for(self.reader.readexactly(length - 20), timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        return decode_message(head + body)

    async def ask(self, data: Message | bytes, timeout: float = 5.0) -> Message:
        self.send(data)
        answer = await self.recv(timeout)
        assert answer is not None, "connection closed instead of an answer"
        return answer

    async def closed_within(self, seconds: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return data == b""

    async def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives (and the connection stays up) for ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.readexactly(1), seconds)
        except TimeoutError:
            return True
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return False
        return False

    def close(self) -> None:
        self.writer.close()


def vsai(auth: int | None = S13_APPLICATION_ID, acct: int | None = None) -> Avp:
    children = [Avp.new("Vendor-Id", VENDOR)]
    if auth is not None:
        children.append(Avp.new("Auth-Application-Id", auth))
    if acct is not None:
        children.append(Avp.new("Acct-Application-Id", acct))
    return Avp.new("Vendor-Specific-Application-Id", children)


def cer(
    *,
    omit: tuple[str, ...] = (),
    apps: tuple[Avp, ...] | None = None,
    extra: tuple[Avp, ...] = (),
    flags: int = R,
    origin_state_id: int | None = None,
) -> Message:
    message = Message(CER, 0, flags, next(_ids), next(_ids))
    for name, value in (
        ("Origin-Host", "mme.test"),
        ("Origin-Realm", "test"),
        ("Host-IP-Address", "127.0.0.1"),
        ("Vendor-Id", 0),
        ("Product-Name", "raw-mme"),
    ):
        if name not in omit:
            message.add(name, value)
    if origin_state_id is not None:
        message.add("Origin-State-Id", origin_state_id)
    for avp in apps if apps is not None else (Avp.new("Auth-Application-Id", S13_APPLICATION_ID),):
        message.avps.append(avp)
    message.avps.extend(extra)
    return message


def base_request(code: int, *extra: Avp, omit: tuple[str, ...] = ()) -> Message:
    message = Message(code, 0, R, next(_ids), next(_ids))
    if "Origin-Host" not in omit:
        message.add("Origin-Host", "mme.test")
    if "Origin-Realm" not in omit:
        message.add("Origin-Realm", "test")
    message.avps.extend(extra)
    return message


def ecr(
    imei: str | None = IMEI_OK,
    *,
    omit: tuple[str, ...] = (),
    extra: tuple[Avp, ...] = (),
    flags: int = R | P,
    application_id: int = S13_APPLICATION_ID,
    command_code: int = ECR,
    terminal_information: Avp | None = None,
    destination_host: str | None = None,
    destination_realm: str = "localdomain",
    end_to_end: int | None = None,
) -> Message:
    """An ME-Identity-Check-Request in the TS 29.272 §7.2.19 order."""
    e2e = end_to_end if end_to_end is not None else next(_ids)
    message = Message(command_code, application_id, flags, next(_ids), e2e)
    if "Session-Id" not in omit:
        message.add("Session-Id", f"mme.test;1;{e2e}")
    if "Vendor-Specific-Application-Id" not in omit:
        message.avps.append(vsai())
    if "Auth-Session-State" not in omit:
        message.add("Auth-Session-State", 1)
    if "Origin-Host" not in omit:
        message.add("Origin-Host", "mme.test")
    if "Origin-Realm" not in omit:
        message.add("Origin-Realm", "test")
    if destination_host is not None:
        message.add("Destination-Host", destination_host)
    if "Destination-Realm" not in omit:
        message.add("Destination-Realm", destination_realm)
    if terminal_information is not None:
        message.avps.append(terminal_information)
    elif "Terminal-Information" not in omit:
        message.add("Terminal-Information", [Avp.new("IMEI", imei)])
    message.avps.extend(extra)
    return message


async def open_peer(gateway: Gateway, origin_state_id: int | None = None) -> RawPeer:
    peer = await RawPeer.connect(gateway)
    cea = await peer.ask(cer(origin_state_id=origin_state_id))
    assert cea.get("Result-Code") == 2001, cea
    return peer


def failed(answer: Message) -> list[Avp]:
    avp = answer.find(FAILED_AVP)
    assert avp is not None, answer
    return avp.children


def assert_identity(answer: Message) -> None:
    # RFC 6733 §6.2: every answer carries our Origin-Host/Realm, never Destination-*.
    assert answer.get("Origin-Host") == "eir.localdomain"
    assert answer.get("Origin-Realm") == "localdomain"
    assert answer.find(293) is None and answer.find(283) is None


def assert_protocol_error(request: Message, answer: Message, code: int) -> None:
    # RFC 6733 §7.1.3, §7.2: 3xxx answers are answer-messages with the E bit, R cleared,
    # P copied, same identifiers and command.
    assert answer.get("Result-Code") == code, answer
    assert answer.flags & (R | E) == E
    assert answer.flags & P == request.flags & P
    assert (answer.command_code, answer.application_id) == (
        request.command_code,
        request.application_id,
    )
    assert (answer.hop_by_hop, answer.end_to_end) == (request.hop_by_hop, request.end_to_end)
    assert_identity(answer)


def assert_permanent_error(request: Message, answer: Message, code: int) -> None:
    # RFC 6733 §7.1.5: 5xxx in the command's own answer, E bit clear; TS 29.272 §7.2.20:
    # the ECA keeps Session-Id first and Auth-Session-State.
    assert answer.get("Result-Code") == code, answer
    assert answer.flags & (R | E) == 0
    assert (answer.hop_by_hop, answer.end_to_end) == (request.hop_by_hop, request.end_to_end)
    assert_identity(answer)
    if request.command_code == ECR:
        assert answer.get("Auth-Session-State") == 1
        session = request.find(SESSION_ID)
        if session is not None and request.avps[0] is session:
            assert answer.avps[0].code == SESSION_ID and answer.avps[0].data == session.data


# ---------------------------------------------------------------------------------------------
# Capabilities exchange (RFC 6733 §5.3, §5.6)


async def test_cer_missing_required_avp_is_5005_with_failed_avp_then_close(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    for name, code in (
        ("Origin-Host", 264),
        ("Origin-Realm", 296),
        ("Host-IP-Address", 257),
        ("Vendor-Id", 266),
        ("Product-Name", 269),
    ):
        peer = await RawPeer.connect(gateway)
        try:
            request = cer(omit=(name,))
            answer = await peer.ask(request)
            # §5.3.2 CEA CCF + §7.1.5 5005: Failed-AVP names the missing AVP; no E bit.
            assert answer.command_code == CER and answer.flags == 0
            assert answer.get("Result-Code") == 5005, (name, answer)
            assert [(a.code, a.vendor) for a in failed(answer)] == [(code, 0)]
            assert answer.get("Host-IP-Address") is not None  # CEA CCF: 1* Host-IP-Address
            assert answer.get("Vendor-Id") == 0 and answer.get("Product-Name") == "eir-gateway"
            assert_identity(answer)
            assert await peer.closed_within(3.0)  # no capabilities agreed: no connection
        finally:
            peer.close()


async def test_cer_applications_common_relay_vsai_and_none(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    # §5.3: common = own ids ∩ Auth-/Acct-Application-Id and VSAI ids; relay counts as common.
    for apps in (
        (Avp.new("Auth-Application-Id", S13_APPLICATION_ID),),
        (vsai(),),  # S13 only inside a Vendor-Specific-Application-Id (how MMEs send it)
        (Avp.new("Auth-Application-Id", 0xFFFFFFFF),),  # §2.4 relay
        (vsai(auth=None, acct=S13_APPLICATION_ID),),  # VSAI ids count whatever their kind
    ):
        peer = await RawPeer.connect(gateway)
        try:
            answer = await peer.ask(cer(apps=apps))
            assert answer.get("Result-Code") == 2001, (apps, answer)
            advertised = answer.get("Vendor-Specific-Application-Id")
            assert [(a.code, a.value) for a in advertised] == [(266, VENDOR), (258, 16777252)]
            assert answer.get("Supported-Vendor-Id") == VENDOR
            assert await peer.silent_for(0.2)  # R-Open: stays up
        finally:
            peer.close()
    # §5.3: no common application -> 5010 DIAMETER_NO_COMMON_APPLICATION and disconnect.
    no_common: tuple[tuple[Avp, ...], ...] = ((Avp.new("Auth-Application-Id", 4),), ())
    for offered in no_common:
        peer = await RawPeer.connect(gateway)
        try:
            answer = await peer.ask(cer(apps=offered))
            assert answer.get("Result-Code") == 5010, answer
            assert not answer.is_error
            assert await peer.closed_within(3.0)
        finally:
            peer.close()


async def test_cer_unknown_avps_inband_security_and_header_bits(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    unknown_optional = Avp(4242, 0, 0, b"\x00\x00\x00\x01")
    unknown_mandatory = Avp(4242, 0x40, 0, b"\x00\x00\x00\x01")
    cases: list[tuple[Message, int, bool]] = [
        (cer(extra=(unknown_optional,)), 2001, False),  # §4.1: no M bit -> ignored
        (cer(extra=(Avp.new("Inband-Security-Id", 0),)), 2001, False),  # NO_INBAND_SECURITY
        (cer(origin_state_id=7), 2001, False),  # §8.16
        (cer(extra=(unknown_mandatory,)), 5001, False),  # §4.1 M bit not understood
        (cer(extra=(Avp.new("Inband-Security-Id", 1),)), 5017, False),  # §6.10 TLS in-band only
        (cer(flags=R | E), 3008, True),  # §3: E MUST NOT be set in requests
        (cer(flags=R | P), 3008, True),  # §5.3.1: CER is not proxiable
    ]
    for request, code, error_bit in cases:
        peer = await RawPeer.connect(gateway)
        try:
            answer = await peer.ask(request)
            assert answer.get("Result-Code") == code, answer
            assert answer.is_error == error_bit
            assert not answer.is_request
            assert_identity(answer)
            if code == 5001:
                (offender,) = failed(answer)
                assert (offender.code, offender.data) == (4242, unknown_mandatory.data)
            if code == 2001:
                assert await peer.silent_for(0.2)
            else:
                assert await peer.closed_within(3.0)
        finally:
            peer.close()


async def test_cer_host_ip_address_ipv6_accepted_truncated_ipv4_is_5014(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    peer = await RawPeer.connect(gateway)
    try:
        request = cer(omit=("Host-IP-Address",))
        request.avps.insert(2, Avp.new("Host-IP-Address", "::1"))  # §4.3.1 family 2
        assert (await peer.ask(request)).get("Result-Code") == 2001
    finally:
        peer.close()
    peer = await RawPeer.connect(gateway)
    try:
        request = cer(omit=("Host-IP-Address",))
        bad = Avp(257, 0x40, 0, b"\x00\x01\x7f\x00\x00")  # IPv4 with 3 address octets
        request.avps.insert(2, bad)
        answer = await peer.ask(request)
        assert answer.get("Result-Code") == 5014  # §7.1.5 DIAMETER_INVALID_AVP_LENGTH
        assert [a.code for a in failed(answer)] == [257]
        assert await peer.closed_within(3.0)
    finally:
        peer.close()


async def test_first_message_not_cer_closes_without_answer(start_gateway: StartGateway) -> None:
    # RFC 6733 §5.6.1: a connection whose first message is not a CER is closed.
    gateway = await start_gateway()
    for first in (base_request(DWR), ecr()):
        peer = await RawPeer.connect(gateway)
        try:
            peer.send(first)
            assert await peer.recv(3.0) is None
        finally:
            peer.close()


async def test_second_cer_on_open_connection_is_answered(start_gateway: StartGateway) -> None:
    # RFC 6733 §5.6 R-Open / R-Rcv-CER: R-Snd-CEA, stay R-Open.
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        again = cer()
        answer = await peer.ask(again)
        assert answer.command_code == CER and answer.get("Result-Code") == 2001
        # RFC 6733 §3: the answer carries this request's identifiers, not the first CER's.
        assert (answer.hop_by_hop, answer.end_to_end) == (again.hop_by_hop, again.end_to_end)
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
        # This CER is checked on its own (§5.3: 5010); the connection stays open (the row).
        lone = cer(apps=(Avp.new("Auth-Application-Id", 4),))
        answer = await peer.ask(lone)
        assert answer.get("Result-Code") == 5010
        assert (answer.hop_by_hop, answer.end_to_end) == (lone.hop_by_hop, lone.end_to_end)
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------
# Watchdog and disconnect (RFC 6733 §5.4, §5.5)


async def test_dwr_dwa_and_unsolicited_dwa(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(EIR_DIAMETER_ORIGIN_STATE_ID="4242")
    peer = await RawPeer.connect(gateway)
    try:
        cea = await peer.ask(cer(origin_state_id=3))
        assert cea.get("Origin-State-Id") == 4242
        request = base_request(DWR, Avp.new("Origin-State-Id", 3))
        answer = await peer.ask(request)
        # §5.5.2 DWA: Result-Code, Origin-Host, Origin-Realm, [Origin-State-Id] as in the CEA.
        assert answer.command_code == DWR and answer.flags == 0
        assert (answer.hop_by_hop, answer.end_to_end) == (request.hop_by_hop, request.end_to_end)
        assert answer.get("Result-Code") == 2001
        assert answer.get("Origin-State-Id") == 4242
        assert_identity(answer)
        # §5.5.1 DWR CCF: { Origin-Host } missing -> 5005 with Failed-AVP, connection kept.
        answer = await peer.ask(base_request(DWR, omit=("Origin-Host",)))
        assert answer.get("Result-Code") == 5005 and not answer.is_error
        assert [a.code for a in failed(answer)] == [264]
        # §3: an answer whose Hop-by-Hop matches no request is discarded.
        unsolicited = Message(DWR, 0, 0, 0xDEAD, 0xBEEF)
        unsolicited.add("Result-Code", 2001).add("Origin-Host", "mme.test")
        unsolicited.add("Origin-Realm", "test")
        peer.send(unsolicited)
        assert await peer.silent_for(0.3)
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
    finally:
        peer.close()


async def test_dpr_dpa_and_close(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        # §5.4.1 DPR CCF: { Disconnect-Cause } missing -> 5005 with Failed-AVP.
        answer = await peer.ask(base_request(DPR))
        assert answer.get("Result-Code") == 5005 and not answer.is_error
        assert [(a.code, a.value) for a in failed(answer)] == [(273, 0)]
        # A refused DPR changes nothing: the connection stays open, checks are answered, and
        # an unknown cause (5004) or a corrected DPR is answered in turn.
        assert await peer.silent_for(1.5)
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
        unknown = await peer.ask(base_request(DPR, Avp(273, 0x40, 0, (77).to_bytes(4, "big"))))
        assert unknown.get("Result-Code") == 5004
        corrected = await peer.ask(base_request(DPR, Avp.new("Disconnect-Cause", 0)))
        assert corrected.get("Result-Code") == 2001
        assert await peer.closed_within(5.0)
    finally:
        peer.close()
    peer = await open_peer(gateway)
    try:
        request = base_request(DPR, Avp.new("Disconnect-Cause", 2))  # DO_NOT_WANT_TO_TALK_TO_YOU
        answer = await peer.ask(request)
        # §5.4.2 DPA: Result-Code, Origin-Host, Origin-Realm; same identifiers, no E bit.
        assert answer.command_code == DPR and answer.flags == 0
        assert (answer.hop_by_hop, answer.end_to_end) == (request.hop_by_hop, request.end_to_end)
        assert answer.get("Result-Code") == 2001
        assert_identity(answer)
        # §5.4: the DPR sender closes; the gateway closes itself after its linger if we don't.
        assert await peer.closed_within(5.0)
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------
# ME-Identity-Check: CCF of TS 29.272 §7.2.19 and RFC 6733 §7 errors


async def test_ecr_answer_shape_ts29272_7_2_20(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        proxies = tuple(
            Avp.new(
                "Proxy-Info",
                [Avp.new("Proxy-Host", f"r{i}.test"), Avp.new("Proxy-State", bytes([i]))],
            )
            for i in range(3)
        )
        request = ecr(extra=(Avp.new("Route-Record", "dra.test"), *proxies))
        answer = await peer.ask(request)
        assert answer.flags == P  # R clear, P copied, no E, no T
        assert answer.avps[0].code == SESSION_ID and answer.avps[0].data == request.avps[0].data
        assert answer.get("Result-Code") == 2001 and answer.find(297) is None
        assert answer.find(EQUIPMENT_STATUS, VENDOR).value == 0  # type: ignore[union-attr]
        assert answer.get("Auth-Session-State") == 1
        assert answer.find(282) is None  # Route-Record is never echoed (RFC 6733 §6.7.1)
        # §6.2: every Proxy-Info, in order, byte for byte.
        assert [a.data for a in answer.find_all(PROXY_INFO)] == [a.data for a in proxies]
        assert_identity(answer)
    finally:
        peer.close()


async def test_ecr_missing_or_repeated_required_avps(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        # §7.1.5 5005: Failed-AVP holds the missing AVP (code and vendor).
        for name, key in (
            ("Session-Id", (263, 0)),
            ("Auth-Session-State", (277, 0)),  # { Auth-Session-State } in TS 29.272 §7.2.19
            ("Origin-Host", (264, 0)),
            ("Origin-Realm", (296, 0)),
            ("Destination-Realm", (283, 0)),
            ("Terminal-Information", (1401, VENDOR)),
        ):
            request = ecr(omit=(name,))
            answer = await peer.ask(request)
            assert_permanent_error(request, answer, 5005)
            assert [(a.code, a.vendor) for a in failed(answer)] == [key], name
            assert answer.find(EQUIPMENT_STATUS, VENDOR) is None
        # No IMEI inside Terminal-Information (Software-Version only).
        request = ecr(
            terminal_information=Avp.new(
                "Terminal-Information", [Avp.new("Software-Version", "01")]
            )
        )
        answer = await peer.ask(request)
        assert_permanent_error(request, answer, 5005)
        (holder,) = failed(answer)
        assert (holder.code, holder.vendor) in ((1402, VENDOR), (1401, VENDOR))
        # §7.1.5 5009: Failed-AVP is the first excess instance.
        for extra, code in (
            (Avp.new("Session-Id", "mme.test;x;2"), SESSION_ID),
            (Avp.new("Terminal-Information", [Avp.new("IMEI", IMEI_OK)]), 1401),
            (Avp.new("Destination-Realm", "localdomain"), 283),
        ):
            request = ecr(extra=(extra,))
            answer = await peer.ask(request)
            assert_permanent_error(request, answer, 5009)
            assert [(a.code, a.data) for a in failed(answer)] == [(code, extra.data)]
        # Session-Id is a fixed-position AVP (< Session-Id >): elsewhere it is refused.
        request = ecr(omit=("Session-Id",), extra=(Avp.new("Session-Id", "mme.test;late"),))
        answer = await peer.ask(request)
        assert answer.get("Result-Code") in (5005, 5008) and not answer.is_error
        # VSAI with both ids -> 5009 (§6.11 MUST), with neither -> 5005 (§6.11 SHOULD).
        request = ecr(
            omit=("Vendor-Specific-Application-Id",),
            extra=(vsai(acct=S13_APPLICATION_ID),),
        )
        assert (await peer.ask(request)).get("Result-Code") == 5009
        request = ecr(omit=("Vendor-Specific-Application-Id",), extra=(vsai(auth=None),))
        assert (await peer.ask(request)).get("Result-Code") == 5005
        assert await peer.silent_for(0.1)  # permanent failures keep the connection
    finally:
        peer.close()


async def test_ecr_optional_and_unknown_avps(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        supported_features = Avp(
            628,
            0x80,
            VENDOR,
            Avp(266, 0x40, 0, VENDOR.to_bytes(4, "big")).encode()
            + Avp(629, 0x80, VENDOR, b"\x00\x00\x00\x01").encode()
            + Avp(630, 0x80, VENDOR, b"\x00\x00\x00\x01").encode(),
        )
        accepted = [
            ecr(omit=("Vendor-Specific-Application-Id",)),  # [ VSAI ] is optional
            ecr(extra=(Avp.new("User-Name", "001010123456789"),)),
            ecr(extra=(Avp(4242, 0, 0, b"abcd"),)),  # §4.1 unknown, no M: ignored
            ecr(extra=(Avp(4242, 0, VENDOR, b"abcd"),)),
            ecr(extra=(supported_features,)),  # *[ AVP ] (not in the ECR CCF, no M bit)
            ecr(extra=(Avp.new("Origin-State-Id", 9),)),
            ecr(destination_host="eir.localdomain"),
            ecr(destination_host="EIR.LocalDomain"),  # DiameterIdentity: case-insensitive
            ecr(destination_realm="LOCALDOMAIN"),
        ]
        for request in accepted:
            answer = await peer.ask(request)
            assert answer.get("Result-Code") == 2001, (request, answer)
            assert answer.find(EQUIPMENT_STATUS, VENDOR).value == 0  # type: ignore[union-attr]
        # DRMP (RFC 7944) is in the ECA CCF: echoed right after Session-Id.
        answer = await peer.ask(ecr(extra=(Avp(301, 0, 0, b"\x00\x00\x00\x05"),)))
        assert answer.get("Result-Code") == 2001
        assert (answer.avps[1].code, answer.avps[1].data) == (301, b"\x00\x00\x00\x05")
        # §4.1: an unknown AVP with the M bit -> 5001, Failed-AVP holds it whole.
        for unknown in (Avp(4242, 0x40, 0, b"abcd"), Avp(4242, 0xC0, VENDOR, b"abcd")):
            request = ecr(extra=(unknown,))
            answer = await peer.ask(request)
            assert_permanent_error(request, answer, 5001)
            assert [(a.code, a.vendor, a.data) for a in failed(answer)] == [
                (unknown.code, unknown.vendor, unknown.data)
            ]
        # Inside Terminal-Information (§7.3.3 has *[ AVP ]): shown inside its parent (§7.5).
        request = ecr(
            terminal_information=Avp.new(
                "Terminal-Information",
                [Avp.new("IMEI", IMEI_OK), Avp(4242, 0xC0, VENDOR, b"abcd")],
            )
        )
        answer = await peer.ask(request)
        assert_permanent_error(request, answer, 5001)
        (parent,) = failed(answer)
        assert (parent.code, parent.vendor) == (1401, VENDOR)
        assert [(a.code, a.vendor) for a in parent.children] == [(4242, VENDOR)]
        # IMEI with vendor 0 is not the 3GPP IMEI (RFC 6733 §4.1: Vendor-Id 0 is not 3GPP).
        request = ecr(
            terminal_information=Avp.new(
                "Terminal-Information", [Avp(1402, 0xC0, 0, IMEI_OK.encode())]
            )
        )
        assert (await peer.ask(request)).get("Result-Code") == 5001
    finally:
        peer.close()


async def test_ecr_values_flags_and_lengths(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        # Auth-Session-State: 0 and 1 are the RFC 6733 §8.11 values; others are 5004.
        assert (await peer.ask(ecr(omit=("Auth-Session-State",), extra=()))).get(
            "Result-Code"
        ) == 5005
        request = ecr(omit=("Auth-Session-State",))
        request.avps.insert(2, Avp.new("Auth-Session-State", 0))
        answer = await peer.ask(request)
        assert answer.get("Result-Code") == 2001 and answer.get("Auth-Session-State") == 1
        request = ecr(omit=("Auth-Session-State",))
        request.avps.insert(2, Avp.new("Auth-Session-State", 5))
        answer = await peer.ask(request)
        assert_permanent_error(request, answer, 5004)
        assert [(a.code, a.value) for a in failed(answer)] == [(277, 5)]
        # UTF8String that is not UTF-8 -> 5004 (§4.3.1), offender shown in its parent.
        request = ecr(
            terminal_information=Avp.new(
                "Terminal-Information", [Avp(1402, 0xC0, VENDOR, b"\xff\xfe3520990012")]
            )
        )
        answer = await peer.ask(request)
        assert_permanent_error(request, answer, 5004)
        # Enumerated of 3 octets -> 5014 (§7.1.5 DIAMETER_INVALID_AVP_LENGTH).
        request = ecr(omit=("Auth-Session-State",))
        request.avps.insert(2, Avp(277, 0x40, 0, b"\x00\x00\x01"))
        answer = await peer.ask(request)
        assert answer.get("Result-Code") == 5014
        assert [a.code for a in failed(answer)] == [277]
        # §4.1: a reserved AVP flag -> 3009 DIAMETER_INVALID_AVP_BITS (E bit).
        request = ecr(extra=(Avp(4242, 0x01, 0, b"zz"),))
        answer = await peer.ask(request)
        assert_protocol_error(request, answer, 3009)
        assert [a.code for a in failed(answer)] == [4242]
        # M set on an AVP whose M "MUST NOT" be set (Error-Reporting-Host, §4.5): accepted by
        # default (diameter.strict_avp_flags = false; tests/e2e/test_flags_and_closing.py).
        request = ecr(extra=(Avp(294, 0x40, 0, b"x.test"),))
        assert (await peer.ask(request)).get("Result-Code") == 2001
        # §3: reserved header bits are ignored by the receiver, and cleared in the answer.
        request = ecr(flags=R | P | 0x01)
        answer = await peer.ask(request)
        assert answer.get("Result-Code") == 2001 and answer.flags == P
        assert await peer.silent_for(0.1)
    finally:
        peer.close()


async def test_ecr_protocol_errors_carry_the_e_bit(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        proxy = Avp.new(
            "Proxy-Info", [Avp.new("Proxy-Host", "r.test"), Avp.new("Proxy-State", b"s")]
        )
        cases = [
            (ecr(destination_host="other.test"), 3002),  # not us, we do not relay
            (ecr(destination_realm="elsewhere", extra=(proxy,)), 3003),
            (ecr(application_id=16777251), 3007),  # S6a: not advertised in our CEA
            (ecr(command_code=999), 3001),  # unknown command in S13
            (ecr(command_code=316), 3001),  # ULR is not an S13 command
            (ecr(application_id=0), 3001),  # 324 is not a base protocol command
            (ecr(flags=R | P | E), 3008),  # §3: E MUST NOT be set in requests
        ]
        for request, code in cases:
            answer = await peer.ask(request)
            assert_protocol_error(request, answer, code)
            # §7.2 answer-message: Session-Id first when the request had one.
            assert answer.avps[0].code == SESSION_ID
            assert answer.avps[0].data == request.avps[0].data
            assert answer.find(EQUIPMENT_STATUS, VENDOR) is None
            assert [a.data for a in answer.find_all(PROXY_INFO)] == [
                a.data for a in request.find_all(PROXY_INFO)
            ]
        # Permanent failures are not E-bit answers (§7.1.5).
        request = ecr(omit=("Terminal-Information",), extra=(proxy,))
        answer = await peer.ask(request)
        assert_permanent_error(request, answer, 5005)
        assert [a.data for a in answer.find_all(PROXY_INFO)] == [proxy.data]
        # §3: an answer nobody asked for is discarded silently.
        stray = Message(ECR, S13_APPLICATION_ID, P, 0xDEAD, 0xBEEF)
        stray.add("Session-Id", "x;1").add("Result-Code", 2001)
        stray.add("Origin-Host", "mme.test").add("Origin-Realm", "test")
        peer.send(stray)
        assert await peer.silent_for(0.3)
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
    finally:
        peer.close()


async def test_duplicate_end_to_end_gets_the_same_answer(start_gateway: StartGateway) -> None:
    # RFC 6733 §3, §5.5.4: End-to-End + Origin-Host identify duplicates; the same answer is
    # returned (with the new Hop-by-Hop), the T bit marks a retransmission after failover.
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        e2e = next(_ids)
        first = await peer.ask(ecr(IMEI_OK, end_to_end=e2e))
        assert first.find(EQUIPMENT_STATUS, VENDOR).value == 0  # type: ignore[union-attr]
        for flags in (R | P | T, R | P):
            again = ecr(IMEI_BLACK, end_to_end=e2e, flags=flags)
            answer = await peer.ask(again)
            assert answer.hop_by_hop == again.hop_by_hop and answer.end_to_end == e2e
            assert not answer.flags & T  # §3: T is never set in answers
            assert answer.find(EQUIPMENT_STATUS, VENDOR).value == 0  # type: ignore[union-attr]
        fresh = await peer.ask(ecr(IMEI_BLACK))
        assert fresh.find(EQUIPMENT_STATUS, VENDOR).value == 1  # type: ignore[union-attr]
    finally:
        peer.close()


async def test_framing_errors(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()

    def with_header(data: bytes, *, version: int | None = None, length: int | None = None) -> bytes:
        out = bytearray(data)
        if version is not None:
            out[0] = version
        if length is not None:
            out[1:4] = length.to_bytes(3, "big")
        return bytes(out)

    # §7.1.5 5011: a version other than 1, then the connection closes (cannot trust framing).
    peer = await open_peer(gateway)
    try:
        answer = await peer.ask(with_header(ecr().encode(), version=2))
        assert answer.get("Result-Code") == 5011
        assert await peer.closed_within(3.0)
    finally:
        peer.close()
    # §3 + §7.1.5 5015: Message Length not a multiple of 4.
    peer = await open_peer(gateway)
    try:
        data = ecr().encode() + b"\x00\x00"
        answer = await peer.ask(with_header(data, length=len(data)) + b"\x00\x00")
        assert answer.get("Result-Code") == 5015
        assert await peer.closed_within(3.0)
    finally:
        peer.close()
    # §7.1.5 5014: an AVP shorter than its own header; framing intact, connection kept.
    peer = await open_peer(gateway)
    try:
        data = ecr().encode()
        short = Avp(4242, 0, 0, b"").encode()[:5] + b"\x00\x00\x04"
        body = data[20:] + short + b"\x00\x00\x00\x00"
        answer = await peer.ask(with_header(data[:20] + body, length=20 + len(body)))
        assert answer.get("Result-Code") == 5014
        (offender,) = failed(answer)
        assert offender.code == 4242
        # An AVP length running past the end of the message.
        data = ecr().encode()
        overflow = bytearray(Avp(4243, 0, 0, b"abcd").encode())
        overflow[5:8] = (200).to_bytes(3, "big")
        body = data[20:] + bytes(overflow)
        answer = await peer.ask(with_header(data[:20] + body, length=20 + len(body)))
        assert answer.get("Result-Code") == 5014
        assert [a.code for a in failed(answer)] == [4243]
        assert (await peer.ask(ecr())).get("Result-Code") == 2001
    finally:
        peer.close()
    # A request written a few octets at a time is framed whole.
    peer = await open_peer(gateway)
    try:
        request = ecr()
        data = request.encode()
        for i in range(0, len(data), 7):
            peer.send(data[i : i + 7])
            await peer.writer.drain()
            await asyncio.sleep(0.002)
        whole = await peer.recv()
        assert whole is not None and whole.hop_by_hop == request.hop_by_hop
        assert whole.get("Result-Code") == 2001
    finally:
        peer.close()


async def test_ecr_without_p_bit_is_3008(start_gateway: StartGateway) -> None:
    # TS 29.272 §7.2.19 < Diameter Header: 324, REQ, PXY, 16777252 >; RFC 6733 §7.1.3 3008:
    # header bits "inconsistent with the Command Code's definition" (as the P bit on a CER).
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        request = ecr(flags=R)
        assert_protocol_error(request, await peer.ask(request), 3008)
    finally:
        peer.close()


async def test_failed_avp_of_a_missing_avp_has_its_minimum_payload(
    start_gateway: StartGateway,
) -> None:
    # RFC 6733 §7.1.5 (5005): "The value field of the missing AVP should be of correct minimum
    # length and contain zeroes": an Address is AddressType and an address (§4.3.1), a
    # DiameterIdentity or UTF8String one octet (Wireshark: no "Data is empty").
    gateway = await start_gateway()
    peer = await RawPeer.connect(gateway)
    try:
        answer = await peer.ask(cer(omit=("Host-IP-Address",)))
        assert [(a.code, a.data) for a in failed(answer)] == [(257, bytes(6))]
    finally:
        peer.close()
    peer = await open_peer(gateway)
    try:
        answer = await peer.ask(ecr(omit=("Session-Id",)))
        assert [(a.code, a.data) for a in failed(answer)] == [(263, b"\x00")]
        answer = await peer.ask(base_request(DWR, omit=("Origin-Host",)))
        assert [(a.code, a.data) for a in failed(answer)] == [(264, b"\x00")]
    finally:
        peer.close()


async def test_software_version_not_two_digits_is_5004(start_gateway: StartGateway) -> None:
    # TS 29.272 §7.3.5: Software-Version "shall contain the 2-digit Software Version Number";
    # RFC 6733 §7.1.5 5004, the AVP shown inside its Terminal-Information (§7.5).
    gateway = await start_gateway()
    peer = await open_peer(gateway)
    try:
        for sv in ("123", "AB", "7"):
            request = ecr(
                terminal_information=Avp.new(
                    "Terminal-Information",
                    [Avp.new("IMEI", IMEI_OK), Avp.new("Software-Version", sv)],
                )
            )
            answer = await peer.ask(request)
            assert_permanent_error(request, answer, 5004)
            (terminal,) = failed(answer)
            assert terminal.code == 1401 and terminal.vendor == VENDOR
            assert [(a.code, a.value) for a in terminal.children] == [(1403, sv)]
        request = ecr(
            terminal_information=Avp.new(
                "Terminal-Information", [Avp.new("IMEI", IMEI_OK), Avp.new("Software-Version", "07")]
            )
        )
        assert (await peer.ask(request)).get("Result-Code") == 2001
    finally:
        peer.close()
