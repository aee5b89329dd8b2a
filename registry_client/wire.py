"""Wire forms of registry-api.yaml (components/schemas) and IMEI normalisation.

Everything here is pure: parse/validate JSON-shaped objects into the model and back. The server,
the HTTP client, the importer and the mirror all go through these functions, so the contract is
written down once.

IMEI forms (TS 23.003 §6.2, registry-api.yaml ``info.description``): 14 digits (TAC 8 + SNR 6),
15 digits (plus a Luhn check digit, which must be right) or 16 digits (IMEISV: plus a 2-digit
SVN). All normalise to the 14-digit body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from registry_client.errors import InvalidImei as InvalidImei
from registry_client.errors import RecordError as RecordError
from registry_client.model import RegistryStatus, RegistryVerdict, Report, ReportType, VerdictOrigin

_TAC = re.compile(r"[0-9]{8}")
_SNR = re.compile(r"[0-9]{6}")
_COUNTRY = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2
VERDICT_SOURCES = frozenset({"declared_range", "oem_query", "none"})


def luhn_check_digit(body: str) -> int:
    """Check digit of a 14-digit IMEI body (TS 23.003 Annex B: Luhn over the 14 digits)."""
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = ord(char) - 48
        if index % 2 == 0:  # rightmost body digit is doubled
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def normalise_imei(text: object) -> str:
    """The 14-digit body of an IMEI given as 14, 15 (valid Luhn) or 16 (IMEISV) digits; anything
    else (any type: JSON gives numbers and nulls too) is InvalidImei."""
    # isascii and isdigit: [0-9]+ without a regular expression (a fifth of its cost, on every
    # fresh check's registry look-up).
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()):
        raise InvalidImei(f"IMEI must be decimal digits, got {text!r}")
    if len(text) == 14:
        return text
    if len(text) == 15:
        body = text[:14]
        if luhn_check_digit(body) != ord(text[14]) - 48:
            raise InvalidImei(f"IMEI {text} has a wrong check digit")
        return body
    if len(text) == 16:
        return text[:14]
    raise InvalidImei(f"IMEI must have 14, 15 or 16 digits, got {len(text)}")


def is_tac(text: object) -> bool:
    return isinstance(text, str) and _TAC.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class SerialRange:
    """Inclusive serial-number range (``TacDeclaration.ranges[]``)."""

    first: int
    last: int

    def __contains__(self, snr: int) -> bool:
        return self.first <= snr <= self.last


@dataclass(frozen=True, slots=True)
class TacDeclaration:
    tac: str
    participating: bool
    ranges: tuple[SerialRange, ...] = ()
    manufacturer: str | None = None
    updated: str | None = None  # RFC 3339 date-time

    def covers(self, imei: str) -> bool:
        snr = int(imei[8:14])
        for r in self.ranges:  # a loop, not any(): no generator per fresh check
            if r.first <= snr <= r.last:
                return True
        return False


def decide(imei: str, declaration: TacDeclaration | None) -> tuple[RegistryStatus, str]:
    """Status and source for a 14-digit IMEI (registry-api.yaml ``Verdict.status``)."""
    if declaration is None:
        return RegistryStatus.UNKNOWN, "none"
    if declaration.covers(imei):
        return RegistryStatus.MANUFACTURED, "declared_range"
    if declaration.participating:
        return RegistryStatus.NOT_MANUFACTURED, "declared_range"
    return RegistryStatus.UNKNOWN, "none"


# -- parsing (strict: every problem names the field) -----------------------------------------


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise RecordError(f"{name} must be a boolean, got {value!r}")


def _optional_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a string, got {value!r}")
    return value


def _datetime(value: str, name: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{name} must be an RFC 3339 date-time, got {value!r}") from None
    return value


def parse_range(obj: object, name: str = "range") -> SerialRange:
    if isinstance(obj, str):  # "first-last", the CSV form
        first, sep, last = obj.strip().partition("-")
        if not sep:
            raise RecordError(f"{name} must be FIRST-LAST, got {obj!r}")
        obj = {"first": first, "last": last}
    if not isinstance(obj, Mapping):
        raise RecordError(f"{name} must be an object with first and last")
    bounds: list[int] = []
    for label in ("first", "last"):
        value = obj.get(label)
        if not isinstance(value, str) or not _SNR.fullmatch(value):
            raise RecordError(f"{name}.{label} must be 6 digits, got {value!r}")
        bounds.append(int(value))
    if bounds[0] > bounds[1]:
        raise RecordError(f"{name}: first {bounds[0]:06d} is after last {bounds[1]:06d}")
    return SerialRange(bounds[0], bounds[1])


def parse_tac_declaration(obj: object) -> TacDeclaration:
    """``TacDeclaration`` (registry-api.yaml); ``ranges`` may also be ``"a-b b-c"`` (CSV)."""
    if not isinstance(obj, Mapping):
        raise RecordError("declaration must be an object")
    kind = obj.get("kind")
    if kind not in (None, "", "tac"):
        raise RecordError(f"kind must be 'tac', got {kind!r}")
    tac = obj.get("tac")
    if not is_tac(tac):
        raise RecordError(f"tac must be 8 digits, got {tac!r}")
    assert isinstance(tac, str)
    if "participating" not in obj:
        raise RecordError("participating is required")
    participating = _bool(obj["participating"], "participating")
    raw_ranges = obj.get("ranges", [])
    if isinstance(raw_ranges, str):
        raw_ranges = raw_ranges.replace(";", " ").split()
    if not isinstance(raw_ranges, list):
        raise RecordError("ranges must be a list")
    ranges = tuple(parse_range(r, f"ranges[{i}]") for i, r in enumerate(raw_ranges))
    updated = _optional_str(obj, "updated")
    return TacDeclaration(
        tac=tac,
        participating=participating,
        ranges=tuple(sorted(ranges, key=lambda r: (r.first, r.last))),
        manufacturer=_optional_str(obj, "manufacturer"),
        updated=_datetime(updated, "updated") if updated else None,
    )


def parse_report(obj: object, *, strict_imei: bool = False) -> Report:
    """``Report`` (registry-api.yaml). Import accepts any IMEI form; the wire wants 14 digits."""
    if not isinstance(obj, Mapping):
        raise RecordError("report must be an object")
    kind = obj.get("kind")
    if kind not in (None, "", "report"):
        raise RecordError(f"kind must be 'report', got {kind!r}")
    raw = obj.get("imei")
    if strict_imei and not (isinstance(raw, str) and len(raw) == 14):
        raise RecordError(f"imei must be 14 digits, got {raw!r}")
    try:
        imei = normalise_imei(raw)
    except InvalidImei as exc:
        raise RecordError(f"imei: {exc}") from None
    try:
        rtype = ReportType(obj.get("type"))
    except ValueError:
        allowed = ", ".join(t.value for t in ReportType)
        raise RecordError(f"type must be one of {allowed}, got {obj.get('type')!r}") from None
    country = obj.get("country")
    if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
        raise RecordError(f"country must be an ISO 3166-1 alpha-2 code, got {country!r}")
    since = _optional_str(obj, "since")
    if since is not None:
        try:
            date.fromisoformat(since)
        except ValueError:
            raise RecordError(f"since must be a date YYYY-MM-DD, got {since!r}") from None
    withdrawn = obj.get("withdrawn")
    return Report(
        imei=imei,
        type=rtype,
        country=country,
        since=since,
        withdrawn=False if withdrawn in (None, "") else _bool(withdrawn, "withdrawn"),
    )


def parse_verdict(obj: object, *, origin: VerdictOrigin, fetched_at: float) -> RegistryVerdict:
    """``Verdict`` from a server; raises RecordError on anything outside the contract."""
    if not isinstance(obj, Mapping):
        raise RecordError("verdict must be an object")
    imei, tac = obj.get("imei"), obj.get("tac")
    if not (isinstance(imei, str) and len(imei) == 14 and imei.isdigit()):
        raise RecordError(f"verdict imei must be 14 digits, got {imei!r}")
    if not is_tac(tac) or imei[:8] != tac:
        raise RecordError(f"verdict tac {tac!r} does not match imei {imei}")
    try:
        status = RegistryStatus(obj.get("status"))
    except ValueError:
        raise RecordError(f"verdict status {obj.get('status')!r} is not in the contract") from None
    source = obj.get("source", "none")
    if source not in VERDICT_SOURCES:
        raise RecordError(f"verdict source {source!r} is not in the contract")
    raw_reports = obj.get("reports", [])
    if not isinstance(raw_reports, list):
        raise RecordError("verdict reports must be a list")
    manufacturer = obj.get("manufacturer")
    if manufacturer is not None and not isinstance(manufacturer, str):
        raise RecordError("verdict manufacturer must be a string")
    return RegistryVerdict(
        imei=imei,
        tac=imei[:8],
        status=status,
        manufacturer=manufacturer,
        source=source,
        reports=tuple(parse_report(r, strict_imei=True) for r in raw_reports),
        origin=origin,
        fetched_at=fetched_at,
    )


# -- serialising -----------------------------------------------------------------------------


def range_to_json(r: SerialRange) -> dict[str, str]:
    return {"first": f"{r.first:06d}", "last": f"{r.last:06d}"}


def tac_to_json(declaration: TacDeclaration, *, kind: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "tac"} if kind else {}
    out["tac"] = declaration.tac
    if declaration.manufacturer is not None:
        out["manufacturer"] = declaration.manufacturer
    out["participating"] = declaration.participating
    out["ranges"] = [range_to_json(r) for r in declaration.ranges]
    if declaration.updated is not None:
        out["updated"] = declaration.updated
    return out


def report_to_json(report: Report, *, kind: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "report"} if kind else {}
    out.update(imei=report.imei, type=report.type.value, country=report.country)
    if report.since is not None:
        out["since"] = report.since
    out["withdrawn"] = report.withdrawn
    return out


def verdict_to_json(verdict: RegistryVerdict) -> dict[str, Any]:
    out: dict[str, Any] = {"imei": verdict.imei, "tac": verdict.tac, "status": verdict.status.value}
    if verdict.manufacturer is not None:
        out["manufacturer"] = verdict.manufacturer
    out["source"] = verdict.source
    out["reports"] = [report_to_json(r) for r in verdict.reports]
    return out
