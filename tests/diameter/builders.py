"""Small builders shared by the codec, validation, answer and interop tests (no tests here)."""

from __future__ import annotations

from diameter.codec import Avp
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
