"""Edge-case ECRs relayed by freeDiameter 1.2.1 (Debian ``freediameterd``) to the gateway.

freeDiameter has no S13 application, so it sits where it sits in real networks, as a relay agent
(DRA) between a minimal MME run by the test and the gateway (see test_freediameter.py). Every
answer of the gateway is parsed by freeDiameter's own message parser against its dictionary
(base protocol, NASREQ, DCCA and the 3GPP DCCA AVPs loaded), dumped by ``dbg_msg_dumps``, and
handed back to the MME: freeDiameter must log no parse error, relay each answer, and the MME must
read the expected result from what freeDiameter forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from diameter.codec import Avp, Message
from diameter.dictionary.ts29272_s13 import VENDOR
from gateway.service import Gateway
from tests.interop import test_freediameter as fd_suite
from tests.interop.conftest import StartGateway
from tests.interop.test_freediameter import (
    FreeDiameter,
    RelayedMme,
    StartFd,
    counter,
    start_relay,
)

# The freeDiameter fixtures of test_freediameter.py (skip when freeDiameterd is not installed).
freediameterd = fd_suite.freediameterd
certificate = fd_suite.certificate
start_fd = fd_suite.start_fd

# freeDiameter has no S13 command: looking up 324 in its dictionary fails (ENOTSUP) once for each
# ECR and each ECA it relays, and it then relays the message as it stands. Any other ERROR line,
# or one of these, would be its parser or its routing refusing something.
COMMAND_NOT_IN_DICTIONARY = "fd_dict_search ( dict, DICT_COMMAND"
COMPLAINTS = ("Unable to parse", "rror parsing", "invalid", "Invalid", "EBADMSG", "discard")


@pytest.fixture
async def relay(
    start_gateway: StartGateway, start_fd: StartFd
) -> AsyncIterator[tuple[RelayedMme, FreeDiameter, Gateway]]:
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    mme = RelayedMme()
    server = await asyncio.start_server(mme.serve, "127.0.0.1", 0)
    try:
        fd = await start_relay(start_fd, gateway, mme, server)
        yield mme, fd, gateway
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


def imei(value: str) -> Avp:
    return Avp.new("IMEI", value)


def sv(value: str) -> Avp:
    return Avp.new("Software-Version", value)


def failed_avps(answer: Message) -> list[Avp]:
    group = answer.find(279)
    assert group is not None, answer
    return group.children


async def test_freediameter_relays_edge_case_answers(
    relay: tuple[RelayedMme, FreeDiameter, Gateway],
) -> None:
    mme, fd, gateway = relay
    answers: dict[str, Message] = {}
    cases = {
        "no_terminal": dict(terminal=None),
        "no_imei": dict(terminal=[sv("01")]),
        "unknown_mbit": dict(
            terminal=[imei("35209900123456")], extra=[Avp(99999, 0x40, 0, b"abcd")]
        ),
        "sv_123": dict(terminal=[imei("35209900123456"), sv("123")]),
        "tac_unknown": dict(terminal=[imei("35111111123456")]),
        # Destination-Host routes it to us through freeDiameter; the realm is not ours.
        "other_realm": dict(
            terminal=[imei("35209900123456")],
            realm="other.realm",
            destination_host="eir.localdomain",
        ),
        "known": dict(terminal=[imei("35209900123456"), sv("07")]),
    }
    for index, (label, kwargs) in enumerate(cases.items()):
        session = f"mme.relay.test;edge;{index}"
        answer = await mme.send_ecr(session, **kwargs)  # type: ignore[arg-type]
        assert answer.command_code == 324 and answer.get("Session-Id") == session, answer
        answers[label] = answer

    text = fd.text()
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert all(COMMAND_NOT_IN_DICTIONARY in line for line in errors), "\n".join(errors)
    assert len(errors) == 2 * len(cases), "\n".join(errors)
    complaints = [line for line in text.splitlines() if any(c in line for c in COMPLAINTS)]
    assert not complaints, "\n".join(complaints)
    # freeDiameter framed and dumped each of our answers (every top-level AVP header parsed),
    # and forwarded each to the MME.
    received = [d for d in fd.dumps() if d.direction == "RCV" and d.peer == "eir.localdomain"]
    forwarded = [d for d in fd.dumps() if d.direction == "SND" and d.peer == "mme.relay.test"]
    ecas = [d for d in received if d.name == "(not found in dictionary)"]
    assert len(ecas) == len(cases)
    assert len([d for d in forwarded if d.name == "(not found in dictionary)"]) == len(cases)
    assert all(any(line.startswith("AVP: 263") for line in d.lines) for d in ecas)

    def result(label: str) -> int | None:
        return answers[label].get("Result-Code")

    for label in ("no_terminal", "no_imei", "unknown_mbit", "sv_123"):
        assert answers[label].flags == 0x40, (label, answers[label])
    assert result("no_terminal") == 5005
    (zero,) = failed_avps(answers["no_terminal"])
    assert (zero.code, zero.vendor, zero.data) == (1401, VENDOR, b"")
    assert result("no_imei") == 5005
    (zero,) = failed_avps(answers["no_imei"])
    assert (zero.code, zero.vendor) == (1402, VENDOR)
    assert result("unknown_mbit") == 5001
    (unknown,) = failed_avps(answers["unknown_mbit"])
    assert (unknown.code, unknown.flags, unknown.data) == (99999, 0x40, b"abcd")
    assert result("sv_123") == 5004
    (terminal,) = failed_avps(answers["sv_123"])
    assert [(a.code, a.value) for a in terminal.children] == [(1403, "123")]

    tac = answers["tac_unknown"]
    assert tac.get("Result-Code") is None and tac.flags == 0x40, tac
    experimental = tac.find(297)
    assert experimental is not None
    assert {(a.code, a.value) for a in experimental.children} == {(266, VENDOR), (298, 5422)}

    realm = answers["other_realm"]
    assert realm.flags == 0x60 and realm.get("Result-Code") == 3003, realm
    assert realm.get("Origin-Host") == "eir.localdomain"  # ours, not freeDiameter's own 3003

    assert result("known") == 2001
    assert await counter(gateway, "ECA", "out", "5005") == 2
    assert await fd.terminate() == 0
