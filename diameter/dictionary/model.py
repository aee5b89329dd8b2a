"""Shapes of dictionary entries: AVP definitions, grammars (CCF rules), commands."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class AvpType(enum.Enum):
    """RFC 6733 §4.2 basic and §4.3 derived AVP data formats."""

    OCTET_STRING = "OctetString"
    INTEGER32 = "Integer32"
    INTEGER64 = "Integer64"
    UNSIGNED32 = "Unsigned32"
    UNSIGNED64 = "Unsigned64"
    FLOAT32 = "Float32"
    FLOAT64 = "Float64"
    GROUPED = "Grouped"
    ADDRESS = "Address"
    TIME = "Time"
    UTF8_STRING = "UTF8String"
    DIAMETER_IDENTITY = "DiameterIdentity"
    DIAMETER_URI = "DiameterURI"
    ENUMERATED = "Enumerated"
    IP_FILTER_RULE = "IPFilterRule"


class FlagRule(enum.Enum):
    """A column of the RFC 6733 §4.5 AVP flag rules table."""

    MUST = "must"
    MAY = "may"
    MUST_NOT = "must_not"


@dataclass(frozen=True, slots=True)
class AvpDef:
    code: int
    name: str
    type: AvpType
    vendor: int = 0
    m_rule: FlagRule = FlagRule.MUST
    enum_values: Mapping[int, str] | None = None
    # Filled in for Grouped AVPs when the dictionary is compiled.
    grammar: Grammar | None = None


class RuleKind(enum.Enum):
    FIXED = "<>"
    REQUIRED = "{}"
    OPTIONAL = "[]"


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of a CCF (RFC 6733 §3.2): qualifier and AVP name."""

    kind: RuleKind
    name: str
    min: int
    max: int | None  # None: no upper bound


@dataclass(frozen=True, slots=True)
class Grammar:
    """A compiled CCF. ``extensible`` is true when the CCF has ``*[ AVP ]``."""

    rules: tuple[Rule, ...]
    extensible: bool
    # (code, vendor) -> rule index, built by the dictionary compiler.
    index: Mapping[tuple[int, int], int] = field(default_factory=dict)
    # (code, vendor) of each rule, same order as ``rules``.
    keys: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CommandDef:
    code: int
    name: str  # e.g. "Capabilities-Exchange"
    application_id: int
    request_abbrev: str  # "CER"
    answer_abbrev: str  # "CEA"
    proxiable: bool
    request: Grammar
    answer: Grammar


@dataclass(frozen=True, slots=True)
class ApplicationDef:
    application_id: int
    name: str
    vendor: int = 0
    auth: bool = True  # auth application (Auth-Application-Id) vs accounting
