"""IMEI / IMEISV parsing and normalisation (3GPP TS 23.003 §6.2, Annex B; TS 22.016 §3).

IMEI   = TAC (8) + SNR (6) + CD (1)   -> 15 digits
IMEISV = TAC (8) + SNR (6) + SVN (2)  -> 16 digits

On S13 the IMEI AVP carries the 14-digit body and may carry the check digit (TS 29.272 §7.3.4);
the Software-Version AVP carries the SVN (§7.3.5). Everything in the gateway is keyed on the
14-digit body. ``parse_imei`` never raises: it returns an :class:`Imei` or a :class:`Malformed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

BODY_LEN = 14
TAC_LEN = 8
_LENGTHS = frozenset((14, 15, 16))
# GSMA TS.06 Appendix A: reporting body 00 and 02-09 allocate test IMEIs.
_TEST_RBI = frozenset(("00", "02", "03", "04", "05", "06", "07", "08", "09"))
_NULL_BODY = "0" * BODY_LEN


def is_decimal(text: str) -> bool:
    """ASCII decimal digits only (``str.isdigit`` alone accepts other scripts' digits)."""
    return text.isascii() and text.isdigit()


_DIGITS = "0123456789"


def _luhn_group(group: int) -> int:
    # Annex B's sum over the 4 digits of ``group``, the rightmost doubled (5 -> 10 -> 1 + 0).
    total = 0
    for position in range(4):
        digit = group % 10
        group //= 10
        total += (2 * digit - 9 if digit > 4 else 2 * digit) if position % 2 == 0 else digit
    return total


# Annex B's sum of every 4-digit group (at most 9 + 9 + 9 + 9 = 36: one octet each). Groups of
# four taken from the right all start on a doubled digit, so one table serves every group.
_LUHN_GROUPS = bytes(_luhn_group(group) for group in range(10_000))


def luhn_digit(value: int) -> int:
    """Check digit of the body whose digits are ``value``'s (leading zeros included, since
    they add nothing), TS 23.003 Annex B (Luhn, ISO/IEC 7812), by one table look-up per 4
    digits: four for a 14-digit body, a few hundred instructions compiled, not thousands."""
    total = 0
    while value:
        total += _LUHN_GROUPS[value % 10_000]
        value //= 10_000
    return -total % 10


def luhn_check_digit(body: str) -> str:
    """Check digit over the 14-digit body, TS 23.003 Annex B (Luhn, ISO/IEC 7812).

    Digits D14..D1 (D1 rightmost): double D1, D3, ..., D13, add the digits of the products and
    D2, D4, ..., D14; CD is what brings the sum to the next multiple of ten. ``body`` is
    decimal digits (see :func:`luhn_digit`).
    """
    return _DIGITS[luhn_digit(int(body))]


class Imei:
    """A well-formed IMEI, keyed (equality, hash) on the 14-digit ``body``. Immutable: its
    attributes are Final, so mypy refuses an assignment and the compiled build (``eir_compiled``)
    has no setter for them (one raises AttributeError; interpreted, only mypy stands guard).

    A plain class, not a frozen dataclass: one is made per fresh check, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) costs ten times as much."""

    __slots__ = ("body", "given_check_digit", "svn")

    def __init__(
        self, body: str, svn: str | None = None, given_check_digit: str | None = None
    ) -> None:
        self.body: Final = body
        self.svn: Final = svn
        # The 15th digit as received, when the IMEI came with one (may be wrong: see
        # check_digit_ok).
        self.given_check_digit: Final = given_check_digit

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Imei):
            return NotImplemented
        return self.body == other.body

    def __hash__(self) -> int:
        return hash(self.body)

    def __repr__(self) -> str:
        return (
            f"Imei(body={self.body!r}, svn={self.svn!r}, "
            f"given_check_digit={self.given_check_digit!r})"
        )

    @property
    def tac(self) -> str:
        return self.body[:TAC_LEN]

    @property
    def snr(self) -> str:
        return self.body[TAC_LEN:]

    @property
    def reporting_body(self) -> str:
        return self.body[:2]

    @property
    def check_digit(self) -> str:
        return luhn_check_digit(self.body)

    @property
    def check_digit_ok(self) -> bool:
        """False only when a 15th digit was received and is not the Luhn digit."""
        return self.given_check_digit is None or self.given_check_digit == self.check_digit

    @property
    def imei15(self) -> str:
        return self.body + self.check_digit

    @property
    def imeisv(self) -> str | None:
        return None if self.svn is None else self.body + self.svn

    @property
    def as_int(self) -> int:
        return int(self.body)

    @property
    def is_null(self) -> bool:
        return self.body == _NULL_BODY

    @property
    def is_test(self) -> bool:
        """Null IMEI or a test IMEI (reporting body 00, 02-09; GSMA TS.06 Appendix A)."""
        return self.body[:2] in _TEST_RBI


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that is not 14, 15 or 16 ASCII decimal digits."""

    text: str
    detail: str


def is_svn(sv: str) -> bool:
    """TS 23.003 §6.2.2 (TS 29.272 §7.3.5 Software-Version): 2 decimal digits."""
    return len(sv) == 2 and is_decimal(sv)


def _valid_svn(sv: str | None) -> str | None:
    # parse_imei ignores a bad SVN (the S13 application answers 5004 before classifying).
    if sv is not None and is_svn(sv):
        return sv
    return None


def parse_imei(text: str, sv: str | None = None) -> Imei | Malformed:
    """Parse an IMEI (14 or 15 digits) or IMEISV (16 digits); ``sv`` is the Software-Version.

    The SVN of a 16-digit IMEISV wins over ``sv``. A 15th digit is kept as received and checked
    by :attr:`Imei.check_digit_ok` (the caller decides what a bad check digit means).
    """
    n = len(text)
    if n not in _LENGTHS:
        return Malformed(text, f"{n} characters; an IMEI has 14, 15 or 16 digits")
    if not is_decimal(text):
        return Malformed(text, "not decimal digits")
    body = text[:BODY_LEN]
    if n == 14:
        return Imei(body, _valid_svn(sv))
    if n == 15:
        return Imei(body, _valid_svn(sv), text[14])
    return Imei(body, text[14:])


def imei_from_int(value: int, svn: str | None = None) -> Imei:
    """The inverse of :attr:`Imei.as_int` (lists store bodies as integers)."""
    return Imei(f"{value:014d}", svn)
