"""Peer identity over TLS (diameter.peer_identity): the names a certificate vouches for, the
Origin-Host match, and the sans-IO core refusing a CER its certificate does not prove (3010)."""

from __future__ import annotations

import pytest

from diameter.peer import PeerState
from diameter.peer_identity import certificate_names, origin_host_matches
from tests.diameter.test_peer_helpers import MME_HOST, answers, cer, eir_node, responder

# As ssl.SSLSocket.getpeercert() decodes them.
SAN_CERT = {
    "subject": ((("commonName", "cn.example.net"),),),
    "subjectAltName": (("DNS", "mme1.example.net"), ("IP Address", "10.0.0.1"),
                       ("DNS", "mme2.example.net")),
}
CN_CERT = {"subject": ((("countryName", "FR"),), (("commonName", "mme.example.net"),))}
IP_ONLY_CERT = {**CN_CERT, "subjectAltName": (("IP Address", "10.0.0.1"),)}


def test_certificate_names() -> None:
    assert certificate_names(SAN_CERT) == ("mme1.example.net", "mme2.example.net")
    assert certificate_names(CN_CERT) == ("mme.example.net",)
    assert certificate_names(IP_ONLY_CERT) == ("mme.example.net",)  # no DNS name: the CN
    assert certificate_names(None) is None
    assert certificate_names({}) is None  # getpeercert() of an unverified peer


@pytest.mark.parametrize(
    ("host", "names", "expected"),
    [
        ("mme.example.net", ["mme.example.net"], True),
        ("MME.example.NET", ["mme.Example.net"], True),
        ("mme.example.net.", ["mme.example.net"], True),
        ("mme.example.net", ["other.example.net", "mme.example.net"], True),
        ("mme.example.net", ["mme.example.ne"], False),
        ("mme.example.net", [], False),
        ("a.pool.example.net", ["*.pool.example.net"], True),
        ("pool.example.net", ["*.pool.example.net"], False),
        ("a.b.pool.example.net", ["*.pool.example.net"], False),
        ("a.net", ["*.net"], False),  # a wildcard over a single label is refused
        ("a.pool.example.net", ["a*.pool.example.net"], False),
        ("a.pool.example.net", ["*.*.example.net"], False),
    ],
)
def test_origin_host_matches(host: str, names: list[str], expected: bool) -> None:
    assert origin_host_matches(host, names) is expected


def test_cer_not_matching_the_certificate_gets_3010_and_close() -> None:
    peer = responder(eir_node(), transport="tls", certificate_names=("other.example.net",))
    peer.receive_data(cer(MME_HOST), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 3010 and cea.is_error
    assert MME_HOST in cea.get("Error-Message")
    assert peer.should_close and peer.state is PeerState.CLOSED


def test_cer_matching_the_certificate_accepted() -> None:
    peer = responder(eir_node(), transport="tls", certificate_names=(MME_HOST,))
    peer.receive_data(cer(MME_HOST), 0.0)
    (cea,) = answers(peer)
    assert cea.get("Result-Code") == 2001 and peer.state is PeerState.R_OPEN


@pytest.mark.parametrize(
    ("names", "verify"), [(None, True), (("other.example.net",), False)],
    ids=["no-certificate", "check-off"],
)
def test_no_certificate_or_check_off_admits(names: tuple[str, ...] | None, verify: bool) -> None:
    peer = responder(
        eir_node(tls_verify_origin_host=verify), transport="tls", certificate_names=names
    )
    peer.receive_data(cer(MME_HOST), 0.0)
    assert answers(peer)[0].get("Result-Code") == 2001
