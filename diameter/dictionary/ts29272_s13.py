"""3GPP TS 29.272 S13/S13' (MME/SGSN - EIR), with the AVPs it borrows from TS 29.229 and RFC 7944.

AVP flags from TS 29.272 Table 7.3.1/1; CCFs from §7.2.19 (ECR) and §7.2.20 (ECA), current text
(with DRMP). Supported-Features is not in the S13 CCFs; it can only arrive through ``*[ AVP ]``.
"""

from __future__ import annotations

import enum

from diameter.dictionary.model import ApplicationDef

SPECIFICATION = "3GPP TS 29.272 §7.2.19, §7.2.20, §7.3 (V19.4.0); TS 29.229 §6.3.29; RFC 7944"
VENDOR = 10415  # 3GPP

S13_APPLICATION_ID = 16777252

APPLICATIONS = (ApplicationDef(S13_APPLICATION_ID, "3GPP S13/S13'", vendor=VENDOR),)

#   name                  code  type          M   vendor
AVPS = (
    ("Terminal-Information", 1401, "Grouped", "M", VENDOR),
    ("IMEI", 1402, "UTF8String", "M", VENDOR),
    ("Software-Version", 1403, "UTF8String", "M", VENDOR),
    ("Equipment-Status", 1445, "Enumerated", "M", VENDOR),
    ("3GPP2-MEID", 1471, "OctetString", "M", VENDOR),
    # TS 29.229 §6.3.29-31: V must, M may (628) / must not (629, 630).
    ("Supported-Features", 628, "Grouped", "m", VENDOR),
    ("Feature-List-ID", 629, "Unsigned32", "-", VENDOR),
    ("Feature-List", 630, "Unsigned32", "-", VENDOR),
    # RFC 7944 §9.1: DRMP, IETF vendor.
    ("DRMP", 301, "Enumerated", "m", 0),
)

ENUMS = {
    # TS 29.272 §7.3.51 (Rel-17 renames 0/1 PERMITTEDLISTED/PROHIBITEDLISTED; wire values unchanged)
    "Equipment-Status": {0: "WHITELISTED", 1: "BLACKLISTED", 2: "GREYLISTED"},
    "DRMP": {i: f"PRIORITY_{i}" for i in range(16)},
}

GROUPED = """
Terminal-Information ::= <AVP header: 1401 10415>
        [ IMEI ]
        [ 3GPP2-MEID ]
        [ Software-Version ]
      * [ AVP ]

Supported-Features ::= <AVP header: 628 10415>
        { Vendor-Id }
        { Feature-List-ID }
        { Feature-List }
      * [ AVP ]
"""

COMMANDS = (("ME-Identity-Check", "ECR", "ECA"),)

CCF = """
ECR ::= < Diameter Header: 324, REQ, PXY, 16777252 >
        < Session-Id >
        [ DRMP ]
        [ Vendor-Specific-Application-Id ]
        { Auth-Session-State }
        { Origin-Host }
        { Origin-Realm }
        [ Destination-Host ]
        { Destination-Realm }
        { Terminal-Information }
        [ User-Name ]
      * [ AVP ]
      * [ Proxy-Info ]
      * [ Route-Record ]

ECA ::= < Diameter Header: 324, PXY, 16777252 >
        < Session-Id >
        [ DRMP ]
        [ Vendor-Specific-Application-Id ]
        [ Result-Code ]
        [ Experimental-Result ]
        { Auth-Session-State }
        { Origin-Host }
        { Origin-Realm }
        [ Equipment-Status ]
      * [ AVP ]
        [ Failed-AVP ]
      * [ Proxy-Info ]
      * [ Route-Record ]
"""


class EquipmentStatus(enum.IntEnum):
    """TS 29.272 §7.3.51."""

    WHITELISTED = 0
    BLACKLISTED = 1
    GREYLISTED = 2


class ExperimentalResultCode(enum.IntEnum):
    """TS 29.272 §7.4.3 (carried in Experimental-Result with Vendor-Id 10415)."""

    DIAMETER_ERROR_EQUIPMENT_UNKNOWN = 5422
