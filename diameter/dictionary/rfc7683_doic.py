"""RFC 7683 Diameter Overload Indication Conveyance (DOIC): the AVPs of §7, carried by any
application whose grammars end in ``*[ AVP ]`` (TS 29.272's S13 commands do).

AVP flags from RFC 7683 §7.7 (Table 1): V MUST NOT, M neither required nor forbidden ("m").
"""

from __future__ import annotations

import enum

SPECIFICATION = "RFC 7683 §7 (October 2015), errata 4549"
VENDOR = 0

APPLICATIONS = ()

#   name                      code  type          M
AVPS = (
    ("OC-Supported-Features", 621, "Grouped", "m"),
    ("OC-Feature-Vector", 622, "Unsigned64", "m"),
    ("OC-OLR", 623, "Grouped", "m"),
    ("OC-Sequence-Number", 624, "Unsigned64", "m"),
    ("OC-Validity-Duration", 625, "Unsigned32", "m"),
    ("OC-Report-Type", 626, "Enumerated", "m"),
    ("OC-Reduction-Percentage", 627, "Unsigned32", "m"),
)


class OcReportType(enum.IntEnum):
    """RFC 7683 §7.6."""

    HOST_REPORT = 0
    REALM_REPORT = 1


# RFC 7683 §7.2: OC-Feature-Vector bit of the loss algorithm (§6), the one every node supports.
OLR_DEFAULT_ALGO = 0x0000000000000001

ENUMS = {"OC-Report-Type": {int(t): t.name for t in OcReportType}}

# RFC 7683 §7.1, §7.3.
GROUPED = """
OC-Supported-Features ::= < AVP Header: 621 >
        [ OC-Feature-Vector ]
      * [ AVP ]

OC-OLR ::= < AVP Header: 623 >
        < OC-Sequence-Number >
        < OC-Report-Type >
        [ OC-Reduction-Percentage ]
        [ OC-Validity-Duration ]
      * [ AVP ]
"""

COMMANDS = ()

CCF = ""
