"""PEI, SUPI and GPSI as N5g-eir receives them in the query (TS 29.571 §5.3.2, schemas Pei,
Supi, Gpsi), parsed without raising: each ``parse_*`` returns the identity or :class:`Invalid`.

Identities are NamedTuples: immutable like frozen dataclasses, and built several times faster
(one of each per request: 0.4 against 2.4 µs measured for a frozen dataclass of four fields).

A PEI that carries an IMEI is reduced to what S13 classifies (TS 29.272 §7.3.4/§7.3.5): the
14-digit body (TAC + SNR) and the 2-digit Software Version Number, so a handset seen by an MME and
by an AMF is one key in the lists, the decision cache and the observation log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from gateway.imei import BODY_LEN, is_decimal, luhn_check_digit

_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a query value is not the identity it should be (goes into invalidParams.reason)."""

    reason: str


class PeiType(enum.Enum):
    """TS 29.571 Pei: the prefixes before the first '-'."""

    IMEI = "imei"  # imei-<15 digits>: TAC, SNR, check digit (TS 23.003 §6.2.1)
    IMEISV = "imeisv"  # imeisv-<16 digits>: TAC, SNR, SVN (TS 23.003 §6.2.2)
    MAC = "mac"  # mac-xx-xx-xx-xx-xx-xx[-untrusted]: wireline and non-3GPP access (Rel-16)
    EUI = "eui"  # eui-xx-xx-xx-xx-xx-xx-xx-xx: EUI-64 (Rel-16)


class Pei(NamedTuple):
    type: PeiType
    value: str  # the part after the prefix: digits, or hex octets joined by '-'
    untrusted: bool = False  # mac-...-untrusted: not usable as an equipment identifier

    @property
    def has_imei(self) -> bool:
        return self.type in _WITH_IMEI

    @property
    def imei_and_sv(self) -> tuple[str, str | None]:
        """What S13 would carry in IMEI and Software-Version for this PEI.

        ``imei-``: the 14-digit body when the check digit is right; all 15 digits when it is
        wrong, so that the classifier finds ``bad_check_digit`` as for an S13 IMEI AVP with a
        wrong 15th digit. ``imeisv-``: the body and the SVN.
        """
        if self.type is PeiType.IMEISV:
            return self.value[:BODY_LEN], self.value[BODY_LEN:]
        body = self.value[:BODY_LEN]
        if self.value[BODY_LEN:] == luhn_check_digit(body):
            return body, None
        return self.value, None


_WITH_IMEI = frozenset((PeiType.IMEI, PeiType.IMEISV))  # a set: enum attribute reads cost more


def _octets(text: str, count: int) -> bool:
    parts = text.split("-")
    return len(parts) == count and all(len(p) == 2 and _HEX.issuperset(p) for p in parts)


def parse_pei(text: str) -> Pei | Invalid:
    """TS 29.571 Pei: ``imei-`` 15 digits, ``imeisv-`` 16 digits, ``mac-`` six hex octets
    (optionally ``-untrusted``), ``eui-`` eight hex octets."""
    kind, sep, rest = text.partition("-")
    if not sep:
        return Invalid("not a PEI: expected imei-, imeisv-, mac- or eui- and the identifier")
    if kind == "imei":
        if len(rest) != 15 or not is_decimal(rest):
            return Invalid("imei- must be followed by 15 decimal digits (TAC, SNR, check digit)")
        return Pei(PeiType.IMEI, rest)
    if kind == "imeisv":
        if len(rest) != 16 or not is_decimal(rest):
            return Invalid("imeisv- must be followed by 16 decimal digits (TAC, SNR, SVN)")
        return Pei(PeiType.IMEISV, rest)
    if kind == "mac":
        untrusted = rest.endswith("-untrusted")
        octets = rest[: -len("-untrusted")] if untrusted else rest
        if not _octets(octets, 6):
            return Invalid("mac- must be followed by 6 hex octets separated by '-'")
        return Pei(PeiType.MAC, octets.lower(), untrusted)
    if kind == "eui":
        if not _octets(rest, 8):
            return Invalid("eui- must be followed by 8 hex octets separated by '-'")
        return Pei(PeiType.EUI, rest.lower())
    return Invalid(f"unsupported PEI type {kind[:16]!r}: expected imei, imeisv, mac or eui")


class SupiType(enum.Enum):
    """TS 29.571 Supi (TS 23.003 §2.2A)."""

    IMSI = "imsi"
    NAI = "nai"
    GCI = "gci"  # Global Cable Identifier (wireline, Rel-16)
    GLI = "gli"  # Global Line Identifier (wireline, Rel-16)


class Supi(NamedTuple):
    type: SupiType
    value: str

    @property
    def imsi(self) -> str | None:
        """The IMSI that list pairs, observations and clone detection use; None for NAI etc."""
        return self.value if self.type is SupiType.IMSI else None


def parse_supi(text: str) -> Supi | Invalid:
    """``imsi-`` 5 to 15 digits (TS 29.571 pattern), ``nai-``, ``gci-``, ``gli-`` and text."""
    kind, sep, rest = text.partition("-")
    if not sep or not rest:
        return Invalid("not a SUPI: expected imsi-, nai-, gci- or gli- and the identifier")
    if kind == "imsi":
        if not 5 <= len(rest) <= 15 or not is_decimal(rest):
            return Invalid("imsi- must be followed by 5 to 15 decimal digits")
        return Supi(SupiType.IMSI, rest)
    try:
        supi_type = SupiType(kind)
    except ValueError:
        return Invalid(f"unsupported SUPI type {kind[:16]!r}: expected imsi, nai, gci or gli")
    return Supi(supi_type, rest)


class GpsiType(enum.Enum):
    """TS 29.571 Gpsi (TS 23.003 §28.8)."""

    MSISDN = "msisdn"
    EXTID = "extid"


class Gpsi(NamedTuple):
    type: GpsiType
    value: str

    def masked(self) -> str:
        """For logs: an MSISDN keeps its first 3 digits (at most the E.164 country code),
        an external identifier its domain."""
        if self.type is GpsiType.MSISDN:
            return "msisdn-" + self.value[:3] + "*" * (len(self.value) - 3)
        local, _, domain = self.value.partition("@")
        return f"extid-{'*' * len(local)}@{domain}"


def parse_gpsi(text: str) -> Gpsi | Invalid:
    """``msisdn-`` 5 to 15 digits, ``extid-`` local@domain (TS 29.571 Gpsi pattern)."""
    kind, sep, rest = text.partition("-")
    if kind == "msisdn" and sep:
        if not 5 <= len(rest) <= 15 or not is_decimal(rest):
            return Invalid("msisdn- must be followed by 5 to 15 decimal digits")
        return Gpsi(GpsiType.MSISDN, rest)
    if kind == "extid" and sep:
        local, at, domain = rest.partition("@")
        if not (local and at and domain) or "@" in domain:
            return Invalid("extid- must be followed by local-identifier@domain")
        return Gpsi(GpsiType.EXTID, rest)
    return Invalid("not a GPSI: expected msisdn- or extid- and the identifier")
