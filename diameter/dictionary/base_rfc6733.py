"""RFC 6733 Diameter base protocol: AVPs (§4.5 table), common messages (§5), result codes (§7.1).

Applications 0 (common messages) and 0xffffffff (relay, §2.4). Accounting commands (app 3) are not
served by an EIR and are left out; adding them is adding rows here.
"""

from __future__ import annotations

import enum

from diameter.dictionary.model import ApplicationDef

SPECIFICATION = "RFC 6733 (October 2012)"
VENDOR = 0

COMMON_APPLICATION_ID = 0
RELAY_APPLICATION_ID = 0xFFFFFFFF

APPLICATIONS = (
    ApplicationDef(COMMON_APPLICATION_ID, "Diameter Common Messages"),
    ApplicationDef(3, "Diameter Base Accounting", auth=False),
    ApplicationDef(RELAY_APPLICATION_ID, "Relay"),
)

# RFC 6733 §4.5, AVP Flag rules: "M" = M bit MUST be set; "-" = MUST NOT; "m" = MAY.
# V bit MUST NOT be set on every base AVP (vendor 0).
#   name                                code  type               M
AVPS = (
    ("User-Name", 1, "UTF8String", "M"),
    ("Class", 25, "OctetString", "M"),
    ("Session-Timeout", 27, "Unsigned32", "M"),
    ("Proxy-State", 33, "OctetString", "M"),
    ("Acct-Session-Id", 44, "OctetString", "M"),
    ("Acct-Multi-Session-Id", 50, "UTF8String", "M"),
    ("Event-Timestamp", 55, "Time", "M"),
    ("Acct-Interim-Interval", 85, "Unsigned32", "M"),
    ("Host-IP-Address", 257, "Address", "M"),
    ("Auth-Application-Id", 258, "Unsigned32", "M"),
    ("Acct-Application-Id", 259, "Unsigned32", "M"),
    ("Vendor-Specific-Application-Id", 260, "Grouped", "M"),
    ("Redirect-Host-Usage", 261, "Enumerated", "M"),
    ("Redirect-Max-Cache-Time", 262, "Unsigned32", "M"),
    ("Session-Id", 263, "UTF8String", "M"),
    ("Origin-Host", 264, "DiameterIdentity", "M"),
    ("Supported-Vendor-Id", 265, "Unsigned32", "M"),
    ("Vendor-Id", 266, "Unsigned32", "M"),
    ("Firmware-Revision", 267, "Unsigned32", "-"),
    ("Result-Code", 268, "Unsigned32", "M"),
    ("Product-Name", 269, "UTF8String", "-"),
    ("Session-Binding", 270, "Unsigned32", "M"),
    ("Session-Server-Failover", 271, "Enumerated", "M"),
    ("Multi-Round-Time-Out", 272, "Unsigned32", "M"),
    ("Disconnect-Cause", 273, "Enumerated", "M"),
    ("Auth-Request-Type", 274, "Enumerated", "M"),
    ("Auth-Grace-Period", 276, "Unsigned32", "M"),
    ("Auth-Session-State", 277, "Enumerated", "M"),
    ("Origin-State-Id", 278, "Unsigned32", "M"),
    ("Failed-AVP", 279, "Grouped", "M"),
    ("Proxy-Host", 280, "DiameterIdentity", "M"),
    ("Error-Message", 281, "UTF8String", "-"),
    ("Route-Record", 282, "DiameterIdentity", "M"),
    ("Destination-Realm", 283, "DiameterIdentity", "M"),
    ("Proxy-Info", 284, "Grouped", "M"),
    ("Re-Auth-Request-Type", 285, "Enumerated", "M"),
    ("Accounting-Sub-Session-Id", 287, "Unsigned64", "M"),
    ("Authorization-Lifetime", 291, "Unsigned32", "M"),
    ("Redirect-Host", 292, "DiameterURI", "M"),
    ("Destination-Host", 293, "DiameterIdentity", "M"),
    ("Error-Reporting-Host", 294, "DiameterIdentity", "-"),
    ("Termination-Cause", 295, "Enumerated", "M"),
    ("Origin-Realm", 296, "DiameterIdentity", "M"),
    ("Experimental-Result", 297, "Grouped", "M"),
    ("Experimental-Result-Code", 298, "Unsigned32", "M"),
    ("Inband-Security-Id", 299, "Unsigned32", "M"),
    ("E2E-Sequence", 300, "Grouped", "M"),
    ("Accounting-Record-Type", 480, "Enumerated", "M"),
    ("Accounting-Realtime-Required", 483, "Enumerated", "M"),
    ("Accounting-Record-Number", 485, "Unsigned32", "M"),
)

ENUMS = {
    "Redirect-Host-Usage": {
        0: "DONT_CACHE",
        1: "ALL_SESSION",
        2: "ALL_REALM",
        3: "REALM_AND_APPLICATION",
        4: "ALL_APPLICATION",
        5: "ALL_HOST",
        6: "ALL_USER",
    },
    "Session-Server-Failover": {
        0: "REFUSE_SERVICE",
        1: "TRY_AGAIN",
        2: "ALLOW_SERVICE",
        3: "TRY_AGAIN_ALLOW_SERVICE",
    },
    "Disconnect-Cause": {0: "REBOOTING", 1: "BUSY", 2: "DO_NOT_WANT_TO_TALK_TO_YOU"},
    "Auth-Request-Type": {1: "AUTHENTICATE_ONLY", 2: "AUTHORIZE_ONLY", 3: "AUTHORIZE_AUTHENTICATE"},
    "Auth-Session-State": {0: "STATE_MAINTAINED", 1: "NO_STATE_MAINTAINED"},
    "Re-Auth-Request-Type": {0: "AUTHORIZE_ONLY", 1: "AUTHORIZE_AUTHENTICATE"},
    "Termination-Cause": {
        1: "DIAMETER_LOGOUT",
        2: "DIAMETER_SERVICE_NOT_PROVIDED",
        3: "DIAMETER_BAD_ANSWER",
        4: "DIAMETER_ADMINISTRATIVE",
        5: "DIAMETER_LINK_BROKEN",
        6: "DIAMETER_AUTH_EXPIRED",
        7: "DIAMETER_USER_MOVED",
        8: "DIAMETER_SESSION_TIMEOUT",
    },
    "Accounting-Record-Type": {
        1: "EVENT_RECORD",
        2: "START_RECORD",
        3: "INTERIM_RECORD",
        4: "STOP_RECORD",
    },
    "Accounting-Realtime-Required": {
        1: "DELIVER_AND_GRANT",
        2: "GRANT_AND_STORE",
        3: "GRANT_AND_LOSE",
    },
}

# RFC 6733 §4.4 / §6.11 / §6.7.2 / §7.5 / §7.6, Grouped AVPs.
GROUPED = """
Vendor-Specific-Application-Id ::= < AVP Header: 260 >
        { Vendor-Id }
        [ Auth-Application-Id ]
        [ Acct-Application-Id ]

Failed-AVP ::= < AVP Header: 279 >
     1* {AVP}

Proxy-Info ::= < AVP Header: 284 >
        { Proxy-Host }
        { Proxy-State }
      * [ AVP ]

Experimental-Result ::= < AVP Header: 297 >
        { Vendor-Id }
        { Experimental-Result-Code }

E2E-Sequence ::= < AVP Header: 300 >
     2* { AVP }
"""

# (name, request abbreviation, answer abbreviation) of each command below.
COMMANDS = (
    ("Capabilities-Exchange", "CER", "CEA"),
    ("Device-Watchdog", "DWR", "DWA"),
    ("Disconnect-Peer", "DPR", "DPA"),
)

# RFC 6733 §5.3.1, §5.3.2, §5.5.1, §5.5.2, §5.4.1, §5.4.2.
CCF = """
CER ::= < Diameter Header: 257, REQ >
        { Origin-Host }
        { Origin-Realm }
     1* { Host-IP-Address }
        { Vendor-Id }
        { Product-Name }
        [ Origin-State-Id ]
      * [ Supported-Vendor-Id ]
      * [ Auth-Application-Id ]
      * [ Inband-Security-Id ]
      * [ Acct-Application-Id ]
      * [ Vendor-Specific-Application-Id ]
        [ Firmware-Revision ]
      * [ AVP ]

CEA ::= < Diameter Header: 257 >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
     1* { Host-IP-Address }
        { Vendor-Id }
        { Product-Name }
        [ Origin-State-Id ]
        [ Error-Message ]
        [ Failed-AVP ]
      * [ Supported-Vendor-Id ]
      * [ Auth-Application-Id ]
      * [ Inband-Security-Id ]
      * [ Acct-Application-Id ]
      * [ Vendor-Specific-Application-Id ]
        [ Firmware-Revision ]
      * [ AVP ]

DWR ::= < Diameter Header: 280, REQ >
        { Origin-Host }
        { Origin-Realm }
        [ Origin-State-Id ]
      * [ AVP ]

DWA ::= < Diameter Header: 280 >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ Error-Message ]
        [ Failed-AVP ]
        [ Origin-State-Id ]
      * [ AVP ]

DPR ::= < Diameter Header: 282, REQ >
        { Origin-Host }
        { Origin-Realm }
        { Disconnect-Cause }
      * [ AVP ]

DPA ::= < Diameter Header: 282 >
        { Result-Code }
        { Origin-Host }
        { Origin-Realm }
        [ Error-Message ]
        [ Failed-AVP ]
      * [ AVP ]
"""

# RFC 6733 §7.2: the CCF of every answer with the E bit set, whatever its command code.
ANSWER_MESSAGE = """
answer-message ::= < Diameter Header: code, ERR, PXY >
      0*1< Session-Id >
         { Origin-Host }
         { Origin-Realm }
         { Result-Code }
         [ Origin-State-Id ]
         [ Error-Message ]
         [ Error-Reporting-Host ]
         [ Failed-AVP ]
         [ Experimental-Result ]
       * [ Proxy-Info ]
       * [ AVP ]
"""


class ResultCode(enum.IntEnum):
    """RFC 6733 §7.1 Result-Code values."""

    DIAMETER_MULTI_ROUND_AUTH = 1001
    DIAMETER_SUCCESS = 2001
    DIAMETER_LIMITED_SUCCESS = 2002
    DIAMETER_COMMAND_UNSUPPORTED = 3001
    DIAMETER_UNABLE_TO_DELIVER = 3002
    DIAMETER_REALM_NOT_SERVED = 3003
    DIAMETER_TOO_BUSY = 3004
    DIAMETER_LOOP_DETECTED = 3005
    DIAMETER_REDIRECT_INDICATION = 3006
    DIAMETER_APPLICATION_UNSUPPORTED = 3007
    DIAMETER_INVALID_HDR_BITS = 3008
    DIAMETER_INVALID_AVP_BITS = 3009
    DIAMETER_UNKNOWN_PEER = 3010
    DIAMETER_AUTHENTICATION_REJECTED = 4001
    DIAMETER_OUT_OF_SPACE = 4002
    ELECTION_LOST = 4003
    DIAMETER_AVP_UNSUPPORTED = 5001
    DIAMETER_UNKNOWN_SESSION_ID = 5002
    DIAMETER_AUTHORIZATION_REJECTED = 5003
    DIAMETER_INVALID_AVP_VALUE = 5004
    DIAMETER_MISSING_AVP = 5005
    DIAMETER_RESOURCES_EXCEEDED = 5006
    DIAMETER_CONTRADICTING_AVPS = 5007
    DIAMETER_AVP_NOT_ALLOWED = 5008
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
    DIAMETER_NO_COMMON_APPLICATION = 5010
    DIAMETER_UNSUPPORTED_VERSION = 5011
    DIAMETER_UNABLE_TO_COMPLY = 5012
    DIAMETER_INVALID_BIT_IN_HEADER = 5013
    DIAMETER_INVALID_AVP_LENGTH = 5014
    DIAMETER_INVALID_MESSAGE_LENGTH = 5015
    DIAMETER_INVALID_AVP_BIT_COMBO = 5016
    DIAMETER_NO_COMMON_SECURITY = 5017


class DisconnectCause(enum.IntEnum):
    """RFC 6733 §5.4.3."""

    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2


class AuthSessionState(enum.IntEnum):
    """RFC 6733 §8.11."""

    STATE_MAINTAINED = 0
    NO_STATE_MAINTAINED = 1


# RFC 6733 §6.11: Vendor-Specific-Application-Id carries exactly one of these (both -> 5009,
# neither -> 5005). Checked by the generic validator for every Grouped AVP listed here.
EXACTLY_ONE_OF = {
    "Vendor-Specific-Application-Id": ("Auth-Application-Id", "Acct-Application-Id"),
}

# RFC 6733 §7.5: Failed-AVP carries the AVPs that caused a failure (unknown, malformed, with bad
# values or lengths). Its contents are reported, not validated: the generic validator treats the
# AVPs listed here as opaque octets.
NOT_VALIDATED = ("Failed-AVP",)
