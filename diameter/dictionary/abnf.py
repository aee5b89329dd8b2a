"""Compiler for the CCF notation of RFC 6733 §3.2 / §4.4, as written in the specifications.

The dictionary modules keep each command and Grouped AVP in the specification's own text; this
module turns that text into ``Grammar`` objects once, at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diameter.dictionary.model import Rule, RuleKind
from diameter.errors import DictionaryError

_ENTRY = re.compile(r"^\s*([\w-]+)\s*::=\s*<\s*(Diameter|AVP)\s+Header\s*:\s*([^>]*)>", re.M | re.I)
# qualifier: [min]*[max] before the bracket (RFC 6733 §3.2 "qual")
_RULE = re.compile(r"(?:(\d*)\s*\*\s*(\d*))?\s*([<{\[])\s*([\w-]+)\s*([>}\]])")
_KINDS = {"<": RuleKind.FIXED, "{": RuleKind.REQUIRED, "[": RuleKind.OPTIONAL}
_CLOSE = {"<": ">", "{": "}", "[": "]"}


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    name: str
    is_command: bool
    header: tuple[str, ...]  # "Diameter Header: 324, REQ, PXY, 16777252" -> ("324", "REQ", ...)
    rules: tuple[Rule, ...]
    extensible: bool


def parse(text: str) -> list[ParsedEntry]:
    """Parse every ``Name ::= < ... Header: ... > rules`` entry of ``text``."""
    matches = list(_ENTRY.finditer(text))
    entries = []
    for i, m in enumerate(matches):
        body_end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : body_end]
        header = tuple(p.strip() for p in re.split(r"[,\s]+", m.group(3)) if p.strip())
        rules: list[Rule] = []
        extensible = False
        for r in _RULE.finditer(body):
            lo, hi, opening, name, closing = r.groups()
            if _CLOSE[opening] != closing:
                raise DictionaryError(f"{m.group(1)}: unbalanced brackets around {name}")
            kind = _KINDS[opening]
            if name == "AVP":
                extensible = True
                continue
            if r.group(0).lstrip()[0].isdigit() or "*" in r.group(0):
                min_ = int(lo) if lo else (1 if kind is not RuleKind.OPTIONAL else 0)
                max_: int | None = int(hi) if hi else None
            else:
                min_, max_ = (0, 1) if kind is RuleKind.OPTIONAL else (1, 1)
            rules.append(Rule(kind, name, min_, max_))
        entries.append(
            ParsedEntry(m.group(1), m.group(2) == "Diameter", header, tuple(rules), extensible)
        )
    return entries
