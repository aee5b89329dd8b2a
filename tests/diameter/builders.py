"""Small builders shared by the codec, validation, answer and interop tests (no tests here)."""

from __future__ import annotations

from diameter.codec import Avp, Message
from diameter.dictionary import DICTIONARY, CommandDef
from diameter.settings import LocalIdentity
from tests.diameter import vectors as v

TGPP = 10415
S13 = 16777252
EIR = LocalIdentity(origin_host=v.EIR_HOST, origin_realm=v.REALM)


def command(application_id: int, code: int) -> CommandDef:
    cmd = DICTIONARY.command(application_id, code)
    assert cmd is not None
    return cmd


def eca_body(status: int | None = None, experimental: int | None = None) -> list[Avp]:
    """The ECA AVPs after Session-Id (TS 29.272 §7.2.20): VSAI, Auth-Session-State, then an
    Experimental-Result and/or Equipment-Status when given."""
    body = [
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
        ),
        Avp.new("Auth-Session-State", 1),
    ]
    if experimental is not None:
        body.append(
            Avp.new(
                "Experimental-Result",
                [Avp.new("Vendor-Id", TGPP), Avp.new("Experimental-Result-Code", experimental)],
            )
        )
    if status is not None:
        body.append(Avp.new("Equipment-Status", status))
    return body


def micr(
    e2e: int = 1,
    imei: str = "35209900123456",
    sv: str | None = "01",
    user_name: str | None = "001010123456789",
    *,
    destination_realm: str = "test",
    destination_host: str | None = None,
    extra: tuple[Avp, ...] = (),
    flags: int = 0xC0,
    session: str = "",
) -> bytes:
    """An ME-Identity-Check-Request from ``mme.test`` (realm ``test``), as MMEs send it: the
    Terminal-Information's Software-Version and the User-Name when given, ``extra`` AVPs last;
    Hop-by-Hop and End-to-End ``e2e``."""
    a = Avp.new
    terminal = [a("IMEI", imei)] + ([a("Software-Version", sv)] if sv is not None else [])
    avps = [
        a("Session-Id", session or f"mme.test;1700000000;{e2e}"),
        a("Vendor-Specific-Application-Id", [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13)]),
        a("Auth-Session-State", 1),
        a("Origin-Host", "mme.test"),
        a("Origin-Realm", "test"),
        a("Destination-Realm", destination_realm),
    ]
    if destination_host is not None:
        avps.append(a("Destination-Host", destination_host))
    avps.append(a("Terminal-Information", terminal))
    if user_name is not None:
        avps.append(a("User-Name", user_name))
    avps.extend(extra)
    return Message(324, S13, flags, e2e, e2e, avps).encode()
