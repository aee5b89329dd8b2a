"""Golden wire vectors: annotated hex of S13 and RFC 6733 base messages, well-formed and malformed.

Layout as on the wire (RFC 6733 §3 header, §4.1 AVP header): each AVP header line is
``code flags length [vendor]``, its data indented below, padding shown separately. The well-formed
vectors were cross-checked against scapy's Diameter layer and Wireshark (tests/diameter/test_interop_*).
Identities used: MME ``mme.example.net``, EIR ``eir.example.net``, realm ``example.net``.
"""

from __future__ import annotations

import re

_COMMENT = re.compile(r"#.*$", re.M)


def vector(text: str) -> bytes:
    """Bytes of an annotated hex block: ``#`` comments and all whitespace are dropped."""
    return bytes.fromhex("".join(_COMMENT.sub("", text).split()))


SESSION_ID = "mme.example.net;1700000000;42"
MME_HOST = "mme.example.net"
EIR_HOST = "eir.example.net"
REALM = "example.net"
IMEI = "35395803121326"
SOFTWARE_VERSION = "14"
IMSI = "001010123456789"

# ---------------------------------------------------------------------------------------------
# Well-formed messages

CER = vector(
    """
    01 0000d8                            # version 1, length 216
    80 000101                            # flags R, command 257 Capabilities-Exchange
    00000000                             # Application-Id 0
    00000101                             # Hop-by-Hop Identifier
    5ca1ab1e                             # End-to-End Identifier
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000101 40 00000e                   # Host-IP-Address (257) flags M, length 14
      00017f000001 0000                  # IPv4Address('127.0.0.1') + 2 padding
    00000101 40 00001a                   # Host-IP-Address (257) flags M, length 26
      00020000000000000000000000000000   # IPv6Address('::1')
      0001 0000                          # + 2 padding
    0000010a 40 00000c                   # Vendor-Id (266) flags M, length 12
      000028af                           # 10415
    0000010d 00 00000f                   # Product-Name (269) flags -, length 15
      6d6d652d73696d 00                  # 'mme-sim' + 1 padding
    00000116 40 00000c                   # Origin-State-Id (278) flags M, length 12
      6553f100                           # 1700000000
    00000109 40 00000c                   # Supported-Vendor-Id (265) flags M, length 12
      000028af                           # 10415
    00000102 40 00000c                   # Auth-Application-Id (258) flags M, length 12
      01000024                           # 16777252
    00000104 40 000020                   # Vendor-Specific-Application-Id (260) flags M, length 32
      0000010a 40 00000c                 # Vendor-Id (266) flags M, length 12
        000028af                         # 10415
      00000102 40 00000c                 # Auth-Application-Id (258) flags M, length 12
        01000024                         # 16777252
    0000010b 00 00000c                   # Firmware-Revision (267) flags -, length 12
      00000001                           # 1
"""
)

DWR = vector(
    """
    01 00004c                            # version 1, length 76
    80 000118                            # flags R, command 280 Device-Watchdog
    00000000                             # Application-Id 0
    00000102                             # Hop-by-Hop Identifier
    5ca1ab1f                             # End-to-End Identifier
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000116 40 00000c                   # Origin-State-Id (278) flags M, length 12
      6553f100                           # 1700000000
"""
)

DPR = vector(
    """
    01 00004c                            # version 1, length 76
    80 00011a                            # flags R, command 282 Disconnect-Peer
    00000000                             # Application-Id 0
    00000103                             # Hop-by-Hop Identifier
    5ca1ab20                             # End-to-End Identifier
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000111 40 00000c                   # Disconnect-Cause (273) flags M, length 12
      00000000                           # 0
"""
)

ECR = vector(
    """
    01 000124                              # version 1, length 292
    c0 000144                              # flags R,P, command 324 ME-Identity-Check
    01000024                               # Application-Id 16777252
    00000104                               # Hop-by-Hop Identifier
    5ca1ab21                               # End-to-End Identifier
    00000107 40 000025                     # Session-Id (263) flags M, length 37
      6d6d652e6578616d706c652e6e65743b     # 'mme.example.net;1700000000;42'
      313730303030303030303b3432 000000    # + 3 padding
    00000104 40 000020                     # Vendor-Specific-Application-Id (260) flags M, length 32
      0000010a 40 00000c                   # Vendor-Id (266) flags M, length 12
        000028af                           # 10415
      00000102 40 00000c                   # Auth-Application-Id (258) flags M, length 12
        01000024                           # 16777252
    00000115 40 00000c                     # Auth-Session-State (277) flags M, length 12
      00000001                             # 1
    00000108 40 000017                     # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00    # 'mme.example.net' + 1 padding
    00000128 40 000013                     # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00            # 'example.net' + 1 padding
    0000011b 40 000013                     # Destination-Realm (283) flags M, length 19
      6578616d706c652e6e6574 00            # 'example.net' + 1 padding
    00000579 c0 000038 000028af            # Terminal-Information (1401, vendor 10415) flags V,M, length 56
      0000057a c0 00001a 000028af          # IMEI (1402, vendor 10415) flags V,M, length 26
        3335333935383033313231333236 0000  # '35395803121326' + 2 padding
      0000057b c0 00000e 000028af          # Software-Version (1403, vendor 10415) flags V,M, length 14
        3134 0000                          # '14' + 2 padding
    00000001 40 000017                     # User-Name (1) flags M, length 23
      303031303130313233343536373839 00    # '001010123456789' + 1 padding
    0000011c 40 00002c                     # Proxy-Info (284) flags M, length 44
      00000118 40 000017                   # Proxy-Host (280) flags M, length 23
        6472612e6578616d706c652e6e6574 00  # 'dra.example.net' + 1 padding
      00000021 40 00000c                   # Proxy-State (33) flags M, length 12
        01027073                           # b'\x01\x02ps'
"""
)

ECA_2001 = vector(
    """
    01 0000dc                              # version 1, length 220
    40 000144                              # flags P, command 324 ME-Identity-Check
    01000024                               # Application-Id 16777252
    00000104                               # Hop-by-Hop Identifier
    5ca1ab21                               # End-to-End Identifier
    00000107 40 000025                     # Session-Id (263) flags M, length 37
      6d6d652e6578616d706c652e6e65743b     # 'mme.example.net;1700000000;42'
      313730303030303030303b3432 000000    # + 3 padding
    00000104 40 000020                     # Vendor-Specific-Application-Id (260) flags M, length 32
      0000010a 40 00000c                   # Vendor-Id (266) flags M, length 12
        000028af                           # 10415
      00000102 40 00000c                   # Auth-Application-Id (258) flags M, length 12
        01000024                           # 16777252
    0000010c 40 00000c                     # Result-Code (268) flags M, length 12
      000007d1                             # 2001
    00000115 40 00000c                     # Auth-Session-State (277) flags M, length 12
      00000001                             # 1
    00000108 40 000017                     # Origin-Host (264) flags M, length 23
      6569722e6578616d706c652e6e6574 00    # 'eir.example.net' + 1 padding
    00000128 40 000013                     # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00            # 'example.net' + 1 padding
    000005a5 c0 000010 000028af            # Equipment-Status (1445, vendor 10415) flags V,M, length 16
      00000000                             # 0
    0000011c 40 00002c                     # Proxy-Info (284) flags M, length 44
      00000118 40 000017                   # Proxy-Host (280) flags M, length 23
        6472612e6578616d706c652e6e6574 00  # 'dra.example.net' + 1 padding
      00000021 40 00000c                   # Proxy-State (33) flags M, length 12
        01027073                           # b'\x01\x02ps'
"""
)

ECA_5422 = vector(
    """
    01 0000e0                              # version 1, length 224
    40 000144                              # flags P, command 324 ME-Identity-Check
    01000024                               # Application-Id 16777252
    00000104                               # Hop-by-Hop Identifier
    5ca1ab21                               # End-to-End Identifier
    00000107 40 000025                     # Session-Id (263) flags M, length 37
      6d6d652e6578616d706c652e6e65743b     # 'mme.example.net;1700000000;42'
      313730303030303030303b3432 000000    # + 3 padding
    00000104 40 000020                     # Vendor-Specific-Application-Id (260) flags M, length 32
      0000010a 40 00000c                   # Vendor-Id (266) flags M, length 12
        000028af                           # 10415
      00000102 40 00000c                   # Auth-Application-Id (258) flags M, length 12
        01000024                           # 16777252
    00000129 40 000020                     # Experimental-Result (297) flags M, length 32
      0000010a 40 00000c                   # Vendor-Id (266) flags M, length 12
        000028af                           # 10415
      0000012a 40 00000c                   # Experimental-Result-Code (298) flags M, length 12
        0000152e                           # 5422
    00000115 40 00000c                     # Auth-Session-State (277) flags M, length 12
      00000001                             # 1
    00000108 40 000017                     # Origin-Host (264) flags M, length 23
      6569722e6578616d706c652e6e6574 00    # 'eir.example.net' + 1 padding
    00000128 40 000013                     # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00            # 'example.net' + 1 padding
    0000011c 40 00002c                     # Proxy-Info (284) flags M, length 44
      00000118 40 000017                   # Proxy-Host (280) flags M, length 23
        6472612e6578616d706c652e6e6574 00  # 'dra.example.net' + 1 padding
      00000021 40 00000c                   # Proxy-State (33) flags M, length 12
        01027073                           # b'\x01\x02ps'
"""
)

# ---------------------------------------------------------------------------------------------
# Malformed messages (RFC 6733 §2.1, §3, §4.1, §7.1). Each names the result code it calls for.

# Version 2 (RFC 6733 §3: MUST be 1) -> 5011 DIAMETER_UNSUPPORTED_VERSION, connection unframeable.
BAD_VERSION = vector(
    """
    02 00001c                # version 2 (!), length 28
    80 000118                # flags R, command 280 Device-Watchdog
    00000000 00000001 00000002
    00000116 40 00000c       # Origin-State-Id (278) flags M, length 12
      00000001
"""
)

# Message length 29 is not a multiple of 4 (RFC 6733 §3) -> 5015 DIAMETER_INVALID_MESSAGE_LENGTH.
LENGTH_NOT_MULTIPLE_OF_4 = vector(
    """
    01 00001d                # version 1, length 29 (!)
    80 000118                # flags R, command 280 Device-Watchdog
    00000000 00000001 00000002
    00000116 40 00000c       # Origin-State-Id (278) flags M, length 12
      00000001
    00                       # the 29th byte
"""
)

# Message length 16, shorter than the 20-octet header -> 5015 (framing impossible).
LENGTH_BELOW_HEADER = vector(
    """
    01 000010                # version 1, length 16 (!)
    80 000118                # flags R, command 280 Device-Watchdog
    00000000 00000001 00000002
"""
)

# Origin-Realm's AVP length is 4, shorter than an AVP header -> 5014 DIAMETER_INVALID_AVP_LENGTH;
# Failed-AVP: the offending header with a zero-filled payload (RFC 6733 §7.5).
AVP_LENGTH_TOO_SHORT = vector(
    """
    01 00004c                            # version 1, length 76
    80 000118                            # flags R, command 280 Device-Watchdog
    00000000 00000102 5ca1ab1f
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000004                   # Origin-Realm (296) flags M, length 4 (!)
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000116 40 00000c                   # Origin-State-Id (278) flags M, length 12
      6553f100                           # 1700000000
"""
)

# The last AVP (Origin-State-Id) claims 16 octets but only 12 remain -> 5014, Failed-AVP
# Origin-State-Id with a zero-filled Unsigned32.
AVP_PAST_END = vector(
    """
    01 00004c                            # version 1, length 76
    80 000118                            # flags R, command 280 Device-Watchdog
    00000000 00000102 5ca1ab1f
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000116 40 000010                   # Origin-State-Id (278) flags M, length 16 (!)
      6553f100                           # 1700000000
"""
)

# Four octets after the last AVP, counted in the message length: not an AVP -> 5015.
STRAY_BYTES = vector(
    """
    01 000050                            # version 1, length 80
    80 000118                            # flags R, command 280 Device-Watchdog
    00000000 00000102 5ca1ab1f
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 00  # 'mme.example.net' + 1 padding
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 00          # 'example.net' + 1 padding
    00000116 40 00000c                   # Origin-State-Id (278) flags M, length 12
      6553f100                           # 1700000000
    deadbeef                             # stray (!)
"""
)

# Inside Terminal-Information the IMEI (26 octets) is not padded to 28: the next AVP header is read
# two octets early and its length makes no sense -> 5014 on the Grouped AVP (RFC 6733 §4.4, §7.5).
BAD_PADDING_IN_GROUPED = vector(
    """
    01 000070                              # version 1, length 112
    c0 000144                              # flags R,P, command 324 ME-Identity-Check
    01000024 00000104 5ca1ab21
    00000107 40 000025                     # Session-Id (263) flags M, length 37
      6d6d652e6578616d706c652e6e65743b     # 'mme.example.net;1700000000;42'
      313730303030303030303b3432 000000    # + 3 padding
    00000579 c0 000034 000028af            # Terminal-Information (1401, vendor 10415) length 52
      0000057a c0 00001a 000028af          # IMEI (1402, vendor 10415) flags V,M, length 26
        3335333935383033313231333236       # '35395803121326', no padding (!)
      0000057b c0 00000e 000028af          # Software-Version (1403, vendor 10415), length 14
        3134                               # '14', Terminal-Information ends (12+26+14 = 52)
"""
)

# Padding octets that are not zero (RFC 6733 §4: padding is zero-valued). The receiver reads the
# AVP length and ignores the padding content, so this DWR decodes like DWR.
NONZERO_PADDING = vector(
    """
    01 00004c                            # version 1, length 76
    80 000118                            # flags R, command 280 Device-Watchdog
    00000000 00000102 5ca1ab1f
    00000108 40 000017                   # Origin-Host (264) flags M, length 23
      6d6d652e6578616d706c652e6e6574 ff  # 'mme.example.net' + padding 0xff (!)
    00000128 40 000013                   # Origin-Realm (296) flags M, length 19
      6578616d706c652e6e6574 ff          # 'example.net' + padding 0xff (!)
    00000116 40 00000c                   # Origin-State-Id (278) flags M, length 12
      6553f100                           # 1700000000
"""
)

WELL_FORMED = {
    "CER": CER,
    "DWR": DWR,
    "DPR": DPR,
    "ECR": ECR,
    "ECA_2001": ECA_2001,
    "ECA_5422": ECA_5422,
}
