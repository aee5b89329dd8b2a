"""The Diameter dictionary: specification tables compiled once into lookup indexes.

Each specification is one module holding data only (AVP rows, enumerations, CCF text). Adding an
application means adding such a module to ``SPECIFICATIONS``; no code changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType

from diameter.dictionary import abnf, base_rfc6733, rfc7683_doic, ts29272_s13
from diameter.dictionary.model import (
    ApplicationDef,
    AvpDef,
    AvpType,
    CommandDef,
    FlagRule,
    Grammar,
    Rule,
    RuleKind,
)
from diameter.errors import DictionaryError

__all__ = [
    "DICTIONARY",
    "ApplicationDef",
    "AvpDef",
    "AvpType",
    "CommandDef",
    "Dictionary",
    "FlagRule",
    "Grammar",
    "Rule",
    "RuleKind",
]

SPECIFICATIONS: tuple[ModuleType, ...] = (base_rfc6733, ts29272_s13, rfc7683_doic)

_FLAG_COLUMN = {"M": FlagRule.MUST, "-": FlagRule.MUST_NOT, "m": FlagRule.MAY}


class Dictionary:
    """AVPs by (code, vendor) and by name; commands by (application, code); applications by id."""

    def __init__(self, specifications: Iterable[ModuleType]) -> None:
        specs = tuple(specifications)
        self.avps: dict[tuple[int, int], AvpDef] = {}
        self.avps_by_name: dict[str, AvpDef] = {}
        self.applications: dict[int, ApplicationDef] = {}
        self.commands: dict[tuple[int, int], CommandDef] = {}
        self.command_codes: set[int] = set()
        self.commands_by_abbrev: dict[str, CommandDef] = {}
        for spec in specs:
            self._add_avps(spec)
            for app in spec.APPLICATIONS:
                self.applications[app.application_id] = app
        for spec in specs:
            self._add_grouped(spec)
        for spec in specs:
            self._add_commands(spec)
        (answer_message,) = abnf.parse(base_rfc6733.ANSWER_MESSAGE)
        self.answer_message: Grammar = self._grammar(answer_message.rules, True, "answer-message")

    def _add_avps(self, spec: ModuleType) -> None:
        enums: Mapping[str, Mapping[int, str]] = getattr(spec, "ENUMS", {})
        for row in spec.AVPS:
            name, code, type_name, m_rule = row[:4]
            vendor = row[4] if len(row) > 4 else spec.VENDOR
            avp = AvpDef(
                code, name, AvpType(type_name), vendor, _FLAG_COLUMN[m_rule], enums.get(name)
            )
            if (code, vendor) in self.avps or name in self.avps_by_name:
                raise DictionaryError(
                    f"{spec.__name__}: AVP {name} ({code}, {vendor}) defined twice"
                )
            self.avps[(code, vendor)] = avp
            self.avps_by_name[name] = avp
        for name in enums:
            if name not in self.avps_by_name:
                raise DictionaryError(f"{spec.__name__}: enumeration for unknown AVP {name}")

    def _add_grouped(self, spec: ModuleType) -> None:
        for entry in abnf.parse(getattr(spec, "GROUPED", "")):
            avp = self.avps_by_name.get(entry.name)
            if avp is None or avp.type is not AvpType.GROUPED:
                raise DictionaryError(f"{spec.__name__}: {entry.name} is not a Grouped AVP")
            grammar = self._grammar(entry.rules, entry.extensible, entry.name)
            object.__setattr__(avp, "grammar", grammar)

    def _add_commands(self, spec: ModuleType) -> None:
        entries = {e.name: e for e in abnf.parse(spec.CCF)}
        for name, req_abbrev, ans_abbrev in spec.COMMANDS:
            req, ans = entries[req_abbrev], entries[ans_abbrev]
            code = int(req.header[0])
            app_id = int(req.header[-1]) if req.header[-1].isdigit() and len(req.header) > 1 else 0
            if "REQ" not in req.header or "REQ" in ans.header or int(ans.header[0]) != code:
                raise DictionaryError(f"{spec.__name__}: headers of {name} do not match")
            command = CommandDef(
                code=code,
                name=name,
                application_id=app_id,
                request_abbrev=req_abbrev,
                answer_abbrev=ans_abbrev,
                proxiable="PXY" in req.header,
                request=self._grammar(req.rules, req.extensible, req_abbrev),
                answer=self._grammar(ans.rules, ans.extensible, ans_abbrev),
            )
            self.commands[(app_id, code)] = command
            self.command_codes.add(code)
            self.commands_by_abbrev[req_abbrev] = command
            self.commands_by_abbrev[ans_abbrev] = command

    def _grammar(self, rules: tuple[Rule, ...], extensible: bool, where: str) -> Grammar:
        keys = []
        for rule in rules:
            avp = self.avps_by_name.get(rule.name)
            if avp is None:
                raise DictionaryError(f"{where}: unknown AVP {rule.name} in grammar")
            keys.append((avp.code, avp.vendor))
        index = {key: i for i, key in enumerate(keys)}
        return Grammar(rules, extensible, index, tuple(keys))

    def avp(self, name: str) -> AvpDef:
        try:
            return self.avps_by_name[name]
        except KeyError:
            raise DictionaryError(f"no AVP named {name!r} in the dictionary") from None

    def command(self, application_id: int, code: int) -> CommandDef | None:
        cmd = self.commands.get((application_id, code))
        if cmd is None and application_id != 0:
            # Base commands are sent with application 0 only (RFC 6733 §2.4).
            return None
        return cmd

    def command_name(self, code: int, is_request: bool) -> str:
        """Short name for logs and metric labels: "CER", "ECA", or the bare code."""
        for (_, c), cmd in self.commands.items():
            if c == code:
                return cmd.request_abbrev if is_request else cmd.answer_abbrev
        return str(code)


DICTIONARY = Dictionary(SPECIFICATIONS)
