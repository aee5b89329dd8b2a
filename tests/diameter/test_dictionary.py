"""The dictionary tables compile to what RFC 6733 and TS 29.272 say (reference/standards.md §1, §2)."""

from __future__ import annotations

import types

import pytest

from diameter.dictionary import (
    DICTIONARY,
    AvpType,
    Dictionary,
    FlagRule,
    Grammar,
    RuleKind,
    abnf,
    base_rfc6733,
    ts29272_s13,
)
from diameter.errors import DictionaryError
from tests.diameter.builders import S13, TGPP


def shape(grammar: Grammar) -> list[tuple[str, str, int, int | None]]:
    """A grammar as (kind, AVP name, min, max) rows, in CCF order."""
    return [(r.kind.value, r.name, r.min, r.max) for r in grammar.rules]


# -- AVPs ---------------------------------------------------------------------------------------

# (name, code, vendor, type, M rule): RFC 6733 §4.5 table and TS 29.272 Table 7.3.1/1.
AVP_ROWS = [
    ("User-Name", 1, 0, AvpType.UTF8_STRING, FlagRule.MUST),
    ("Proxy-State", 33, 0, AvpType.OCTET_STRING, FlagRule.MUST),
    ("Event-Timestamp", 55, 0, AvpType.TIME, FlagRule.MUST),
    ("Host-IP-Address", 257, 0, AvpType.ADDRESS, FlagRule.MUST),
    ("Auth-Application-Id", 258, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Acct-Application-Id", 259, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Vendor-Specific-Application-Id", 260, 0, AvpType.GROUPED, FlagRule.MUST),
    ("Session-Id", 263, 0, AvpType.UTF8_STRING, FlagRule.MUST),
    ("Origin-Host", 264, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Supported-Vendor-Id", 265, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Vendor-Id", 266, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Firmware-Revision", 267, 0, AvpType.UNSIGNED32, FlagRule.MUST_NOT),
    ("Result-Code", 268, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Product-Name", 269, 0, AvpType.UTF8_STRING, FlagRule.MUST_NOT),
    ("Disconnect-Cause", 273, 0, AvpType.ENUMERATED, FlagRule.MUST),
    ("Auth-Session-State", 277, 0, AvpType.ENUMERATED, FlagRule.MUST),
    ("Origin-State-Id", 278, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Failed-AVP", 279, 0, AvpType.GROUPED, FlagRule.MUST),
    ("Proxy-Host", 280, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Error-Message", 281, 0, AvpType.UTF8_STRING, FlagRule.MUST_NOT),
    ("Route-Record", 282, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Destination-Realm", 283, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Proxy-Info", 284, 0, AvpType.GROUPED, FlagRule.MUST),
    ("Accounting-Sub-Session-Id", 287, 0, AvpType.UNSIGNED64, FlagRule.MUST),
    ("Redirect-Host", 292, 0, AvpType.DIAMETER_URI, FlagRule.MUST),
    ("Destination-Host", 293, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Error-Reporting-Host", 294, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST_NOT),
    ("Origin-Realm", 296, 0, AvpType.DIAMETER_IDENTITY, FlagRule.MUST),
    ("Experimental-Result", 297, 0, AvpType.GROUPED, FlagRule.MUST),
    ("Experimental-Result-Code", 298, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("Inband-Security-Id", 299, 0, AvpType.UNSIGNED32, FlagRule.MUST),
    ("DRMP", 301, 0, AvpType.ENUMERATED, FlagRule.MAY),
    ("Supported-Features", 628, TGPP, AvpType.GROUPED, FlagRule.MAY),
    ("Feature-List-ID", 629, TGPP, AvpType.UNSIGNED32, FlagRule.MUST_NOT),
    ("Feature-List", 630, TGPP, AvpType.UNSIGNED32, FlagRule.MUST_NOT),
    ("Terminal-Information", 1401, TGPP, AvpType.GROUPED, FlagRule.MUST),
    ("IMEI", 1402, TGPP, AvpType.UTF8_STRING, FlagRule.MUST),
    ("Software-Version", 1403, TGPP, AvpType.UTF8_STRING, FlagRule.MUST),
    ("Equipment-Status", 1445, TGPP, AvpType.ENUMERATED, FlagRule.MUST),
    ("3GPP2-MEID", 1471, TGPP, AvpType.OCTET_STRING, FlagRule.MUST),
]


@pytest.mark.parametrize(("name", "code", "vendor", "avp_type", "m_rule"), AVP_ROWS)
def test_avp_definition(
    name: str, code: int, vendor: int, avp_type: AvpType, m_rule: FlagRule
) -> None:
    by_name = DICTIONARY.avp(name)
    assert DICTIONARY.avps[(code, vendor)] is by_name
    assert (by_name.code, by_name.vendor, by_name.type, by_name.m_rule) == (
        code,
        vendor,
        avp_type,
        m_rule,
    )
    assert (by_name.grammar is not None) == (avp_type is AvpType.GROUPED)


def test_every_base_avp_is_vendor_0_and_every_s13_avp_3gpp_except_drmp() -> None:
    for row in base_rfc6733.AVPS:
        assert DICTIONARY.avp(row[0]).vendor == 0
    for s13_row in ts29272_s13.AVPS:
        row_name = s13_row[0]
        expected = 0 if row_name == "DRMP" else TGPP
        assert DICTIONARY.avp(row_name).vendor == expected


def test_unknown_avp_name_is_a_dictionary_error() -> None:
    with pytest.raises(DictionaryError):
        DICTIONARY.avp("No-Such-AVP")


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("Equipment-Status", {0: "WHITELISTED", 1: "BLACKLISTED", 2: "GREYLISTED"}),
        ("Auth-Session-State", {0: "STATE_MAINTAINED", 1: "NO_STATE_MAINTAINED"}),
        ("Disconnect-Cause", {0: "REBOOTING", 1: "BUSY", 2: "DO_NOT_WANT_TO_TALK_TO_YOU"}),
        ("DRMP", {i: f"PRIORITY_{i}" for i in range(16)}),
    ],
)
def test_enumerations(name: str, values: dict[int, str]) -> None:
    assert dict(DICTIONARY.avp(name).enum_values or {}) == values


def test_enum_classes_match_tables() -> None:
    assert {e.value: e.name for e in ts29272_s13.EquipmentStatus} == dict(
        DICTIONARY.avp("Equipment-Status").enum_values or {}
    )
    assert ts29272_s13.ExperimentalResultCode.DIAMETER_ERROR_EQUIPMENT_UNKNOWN == 5422
    assert {e.value: e.name for e in base_rfc6733.DisconnectCause} == dict(
        DICTIONARY.avp("Disconnect-Cause").enum_values or {}
    )


def test_result_codes() -> None:
    rc = base_rfc6733.ResultCode
    assert (rc.DIAMETER_SUCCESS, rc.DIAMETER_COMMAND_UNSUPPORTED, rc.DIAMETER_TOO_BUSY) == (
        2001,
        3001,
        3004,
    )
    assert (
        rc.DIAMETER_INVALID_HDR_BITS,
        rc.DIAMETER_INVALID_AVP_BITS,
        rc.DIAMETER_UNKNOWN_PEER,
    ) == (
        3008,
        3009,
        3010,
    )
    assert [int(c) for c in rc if 5001 <= c <= 5017] == list(range(5001, 5018))


# -- applications and commands ------------------------------------------------------------------


def test_applications() -> None:
    assert DICTIONARY.applications[S13].vendor == TGPP
    assert DICTIONARY.applications[S13].auth
    assert 0 in DICTIONARY.applications
    assert 0xFFFFFFFF in DICTIONARY.applications


@pytest.mark.parametrize(
    ("app", "code", "name", "abbrevs", "proxiable"),
    [
        (0, 257, "Capabilities-Exchange", ("CER", "CEA"), False),
        (0, 280, "Device-Watchdog", ("DWR", "DWA"), False),
        (0, 282, "Disconnect-Peer", ("DPR", "DPA"), False),
        (S13, 324, "ME-Identity-Check", ("ECR", "ECA"), True),
    ],
)
def test_commands(
    app: int, code: int, name: str, abbrevs: tuple[str, str], proxiable: bool
) -> None:
    cmd = DICTIONARY.command(app, code)
    assert cmd is not None
    assert (cmd.name, cmd.application_id, cmd.proxiable) == (name, app, proxiable)
    assert (cmd.request_abbrev, cmd.answer_abbrev) == abbrevs
    assert DICTIONARY.commands_by_abbrev[abbrevs[0]] is cmd
    assert DICTIONARY.command_name(code, True) == abbrevs[0]
    assert DICTIONARY.command_name(code, False) == abbrevs[1]
    assert code in DICTIONARY.command_codes


def test_base_commands_only_under_application_0_and_unknown_commands() -> None:
    assert DICTIONARY.command(S13, 257) is None
    assert DICTIONARY.command(0, 324) is None
    assert DICTIONARY.command(0, 999) is None
    assert DICTIONARY.command_name(999, True) == "999"


# TS 29.272 §7.2.19 (standards.md §1.2)
ECR_SHAPE = [
    ("<>", "Session-Id", 1, 1),
    ("[]", "DRMP", 0, 1),
    ("[]", "Vendor-Specific-Application-Id", 0, 1),
    ("{}", "Auth-Session-State", 1, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("[]", "Destination-Host", 0, 1),
    ("{}", "Destination-Realm", 1, 1),
    ("{}", "Terminal-Information", 1, 1),
    ("[]", "User-Name", 0, 1),
    ("[]", "Proxy-Info", 0, None),
    ("[]", "Route-Record", 0, None),
]
# TS 29.272 §7.2.20 (standards.md §1.3)
ECA_SHAPE = [
    ("<>", "Session-Id", 1, 1),
    ("[]", "DRMP", 0, 1),
    ("[]", "Vendor-Specific-Application-Id", 0, 1),
    ("[]", "Result-Code", 0, 1),
    ("[]", "Experimental-Result", 0, 1),
    ("{}", "Auth-Session-State", 1, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("[]", "Equipment-Status", 0, 1),
    ("[]", "Failed-AVP", 0, 1),
    ("[]", "Proxy-Info", 0, None),
    ("[]", "Route-Record", 0, None),
]
# RFC 6733 §5.3.1 / §5.3.2 / §5.5 / §5.4 (standards.md §2.2)
CER_SHAPE = [
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("{}", "Host-IP-Address", 1, None),
    ("{}", "Vendor-Id", 1, 1),
    ("{}", "Product-Name", 1, 1),
    ("[]", "Origin-State-Id", 0, 1),
    ("[]", "Supported-Vendor-Id", 0, None),
    ("[]", "Auth-Application-Id", 0, None),
    ("[]", "Inband-Security-Id", 0, None),
    ("[]", "Acct-Application-Id", 0, None),
    ("[]", "Vendor-Specific-Application-Id", 0, None),
    ("[]", "Firmware-Revision", 0, 1),
]
CEA_SHAPE = [
    ("{}", "Result-Code", 1, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("{}", "Host-IP-Address", 1, None),
    ("{}", "Vendor-Id", 1, 1),
    ("{}", "Product-Name", 1, 1),
    ("[]", "Origin-State-Id", 0, 1),
    ("[]", "Error-Message", 0, 1),
    ("[]", "Failed-AVP", 0, 1),
    ("[]", "Supported-Vendor-Id", 0, None),
    ("[]", "Auth-Application-Id", 0, None),
    ("[]", "Inband-Security-Id", 0, None),
    ("[]", "Acct-Application-Id", 0, None),
    ("[]", "Vendor-Specific-Application-Id", 0, None),
    ("[]", "Firmware-Revision", 0, 1),
]
DWR_SHAPE = [
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("[]", "Origin-State-Id", 0, 1),
]
DWA_SHAPE = [
    ("{}", "Result-Code", 1, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("[]", "Error-Message", 0, 1),
    ("[]", "Failed-AVP", 0, 1),
    ("[]", "Origin-State-Id", 0, 1),
]
DPR_SHAPE = [
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("{}", "Disconnect-Cause", 1, 1),
]
DPA_SHAPE = [
    ("{}", "Result-Code", 1, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("[]", "Error-Message", 0, 1),
    ("[]", "Failed-AVP", 0, 1),
]
# RFC 6733 §7.2 (standards.md §2.4)
ANSWER_MESSAGE_SHAPE = [
    ("<>", "Session-Id", 0, 1),
    ("{}", "Origin-Host", 1, 1),
    ("{}", "Origin-Realm", 1, 1),
    ("{}", "Result-Code", 1, 1),
    ("[]", "Origin-State-Id", 0, 1),
    ("[]", "Error-Message", 0, 1),
    ("[]", "Error-Reporting-Host", 0, 1),
    ("[]", "Failed-AVP", 0, 1),
    ("[]", "Experimental-Result", 0, 1),
    ("[]", "Proxy-Info", 0, None),
]


@pytest.mark.parametrize(
    ("abbrev", "expected"),
    [
        ("ECR", ECR_SHAPE),
        ("ECA", ECA_SHAPE),
        ("CER", CER_SHAPE),
        ("CEA", CEA_SHAPE),
        ("DWR", DWR_SHAPE),
        ("DWA", DWA_SHAPE),
        ("DPR", DPR_SHAPE),
        ("DPA", DPA_SHAPE),
    ],
)
def test_command_grammar(abbrev: str, expected: list[tuple[str, str, int, int | None]]) -> None:
    cmd = DICTIONARY.commands_by_abbrev[abbrev]
    grammar = cmd.request if abbrev == cmd.request_abbrev else cmd.answer
    assert shape(grammar) == expected
    assert grammar.extensible  # every one of these ends in *[ AVP ]


def test_answer_message_grammar() -> None:
    assert shape(DICTIONARY.answer_message) == ANSWER_MESSAGE_SHAPE
    assert DICTIONARY.answer_message.extensible


def test_grammar_index_and_keys_follow_the_rules() -> None:
    grammar = DICTIONARY.commands_by_abbrev["ECR"].request
    assert len(grammar.keys) == len(grammar.rules)
    for i, (rule, key) in enumerate(zip(grammar.rules, grammar.keys, strict=True)):
        defn = DICTIONARY.avp(rule.name)
        assert key == (defn.code, defn.vendor)
        assert grammar.index[key] == i
    assert grammar.index[(1401, TGPP)] == 8


@pytest.mark.parametrize(
    ("name", "expected", "extensible"),
    [
        (
            "Vendor-Specific-Application-Id",
            [
                ("{}", "Vendor-Id", 1, 1),
                ("[]", "Auth-Application-Id", 0, 1),
                ("[]", "Acct-Application-Id", 0, 1),
            ],
            False,
        ),
        (
            "Terminal-Information",
            [("[]", "IMEI", 0, 1), ("[]", "3GPP2-MEID", 0, 1), ("[]", "Software-Version", 0, 1)],
            True,
        ),
        (
            "Experimental-Result",
            [("{}", "Vendor-Id", 1, 1), ("{}", "Experimental-Result-Code", 1, 1)],
            False,
        ),
        ("Proxy-Info", [("{}", "Proxy-Host", 1, 1), ("{}", "Proxy-State", 1, 1)], True),
        (
            "Supported-Features",
            [
                ("{}", "Vendor-Id", 1, 1),
                ("{}", "Feature-List-ID", 1, 1),
                ("{}", "Feature-List", 1, 1),
            ],
            True,
        ),
        ("Failed-AVP", [], True),
    ],
)
def test_grouped_grammar(
    name: str, expected: list[tuple[str, str, int, int | None]], extensible: bool
) -> None:
    grammar = DICTIONARY.avp(name).grammar
    assert grammar is not None
    assert shape(grammar) == expected
    assert grammar.extensible is extensible


def test_no_supported_features_in_s13_ccfs() -> None:
    # standards.md §1.2: Supported-Features only through *[ AVP ].
    cmd = DICTIONARY.command(S13, 324)
    assert cmd is not None
    for grammar in (cmd.request, cmd.answer):
        assert (628, TGPP) not in grammar.index


# -- the CCF compiler ---------------------------------------------------------------------------


def test_abnf_qualifiers() -> None:
    (entry,) = abnf.parse(
        """
        X ::= < Diameter Header: 7, REQ, PXY, 99 >
              < A >
              { B }
              [ C ]
           2* { D }
            *3[ E ]
           0*1< F >
            * [ AVP ]
        """
    )
    assert entry.name == "X"
    assert entry.is_command
    assert entry.header == ("7", "REQ", "PXY", "99")
    assert entry.extensible
    assert [(r.kind, r.name, r.min, r.max) for r in entry.rules] == [
        (RuleKind.FIXED, "A", 1, 1),
        (RuleKind.REQUIRED, "B", 1, 1),
        (RuleKind.OPTIONAL, "C", 0, 1),
        (RuleKind.REQUIRED, "D", 2, None),
        (RuleKind.OPTIONAL, "E", 0, 3),
        (RuleKind.FIXED, "F", 0, 1),
    ]


def test_abnf_unbalanced_brackets() -> None:
    with pytest.raises(DictionaryError):
        abnf.parse("X ::= < AVP Header: 1 >\n  { A ]\n")


def _spec(**attrs: object) -> types.ModuleType:
    module = types.ModuleType("fake_spec")
    defaults: dict[str, object] = {
        "VENDOR": 0,
        "APPLICATIONS": (),
        "AVPS": (),
        "CCF": "",
        "COMMANDS": (),
    }
    for key, value in {**defaults, **attrs}.items():
        setattr(module, key, value)
    return module


def test_dictionary_rejects_duplicates_and_unknown_names() -> None:
    dup = _spec(AVPS=(("Session-Id", 263, "UTF8String", "M"),))
    with pytest.raises(DictionaryError):
        Dictionary((base_rfc6733, dup))
    bad_enum = _spec(AVPS=(("X-Thing", 9001, "Enumerated", "M"),), ENUMS={"Y-Thing": {0: "A"}})
    with pytest.raises(DictionaryError):
        Dictionary((base_rfc6733, bad_enum))
    bad_grammar = _spec(
        AVPS=(("X-Group", 9002, "Grouped", "M"),),
        GROUPED="X-Group ::= < AVP Header: 9002 >\n { No-Such-AVP }\n",
    )
    with pytest.raises(DictionaryError):
        Dictionary((base_rfc6733, bad_grammar))
    not_grouped = _spec(
        AVPS=(("X-Flat", 9003, "Unsigned32", "M"),),
        GROUPED="X-Flat ::= < AVP Header: 9003 >\n { Vendor-Id }\n",
    )
    with pytest.raises(DictionaryError):
        Dictionary((base_rfc6733, not_grouped))


def test_adding_an_application_is_adding_a_table() -> None:
    extra = _spec(
        VENDOR=99,
        AVPS=(("X-Value", 7001, "Unsigned32", "M"),),
        COMMANDS=(("X-Check", "XCR", "XCA"),),
        CCF="""
        XCR ::= < Diameter Header: 9999, REQ, PXY, 4242 >
                < Session-Id >
                { X-Value }
              * [ AVP ]
        XCA ::= < Diameter Header: 9999, PXY, 4242 >
                < Session-Id >
                { Result-Code }
        """,
    )
    d = Dictionary((base_rfc6733, ts29272_s13, extra))
    cmd = d.command(4242, 9999)
    assert cmd is not None and cmd.proxiable
    assert shape(cmd.request) == [("<>", "Session-Id", 1, 1), ("{}", "X-Value", 1, 1)]
    assert cmd.request.extensible and not cmd.answer.extensible
    assert d.avps[(7001, 99)].name == "X-Value"
    mismatched = _spec(
        COMMANDS=(("Y", "YR", "YA"),),
        CCF="YR ::= < Diameter Header: 1, REQ >\n{ Origin-Host }\nYA ::= < Diameter Header: 2 >\n",
    )
    with pytest.raises(DictionaryError):
        Dictionary((base_rfc6733, mismatched))
