"""Edge cases of the gateway judged by Erlang/OTP diameter (OTP 25, diameter 2.2.x).

``erlang/s13_mme_edges.escript`` is an MME on OTP's diameter with its decode options left at the
defaults (``string_decode`` true, ``strict_mbit`` true) and ``answer_errors = callback`` on both
the S13 and the base application: every answer of ours reaches the escript with the ``errors``
OTP's decoder found in it (``#diameter_packet.errors``), printed and asserted empty here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.interop.test_erlang as erlang_suite
from tests.e2e.conftest import metric_value
from tests.interop.conftest import (
    HERE,
    Finished,
    StartGateway,
    diameter_port,
    run_process,
)
from tests.interop.test_erlang import erl_string, facts, otp_decode

ESCRIPT = HERE / "erlang" / "s13_mme_edges.escript"
DICTIONARY = HERE / "erlang" / "s13.dia"

# The Erlang/OTP fixture of test_erlang.py (skips when escript or OTP diameter is missing).
escript = erlang_suite.escript
TGPP = 10415




def ecr_term(label: str, **opts: object) -> str:
    items = []
    for key, value in opts.items():
        if value is None:
            items.append(f"{{{key}, undefined}}")
        elif isinstance(value, bool):
            items.append(f"{{{key}, {str(value).lower()}}}")
        elif isinstance(value, int):
            items.append(f"{{{key}, {value}}}")
        else:
            items.append(f"{{{key}, {erl_string(str(value))}}}")
    return f"{{ecr, '{label}', [{', '.join(items)}]}}.\n"


async def run_edges(
    escript: str, tmp_path: Path, port: int, steps: str, *, timeout: float = 25
) -> Finished:
    spec = tmp_path / "edges.terms"
    spec.write_text('{origin_host, "mme.otp.test"}.\n{origin_realm, "otp.test"}.\n' + steps)
    done = await run_process(
        [escript, str(ESCRIPT), str(DICTIONARY), "127.0.0.1", str(port), str(spec)],
        timeout=timeout,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and facts(done, "done"), done.explain()
    assert not facts(done, "cea_timeout") and not facts(done, "cea_failed"), done.explain()
    assert not facts(done, "answer_error"), done.explain()
    (cea,) = facts(done, "cea")
    assert cea["errors"] == "[]", cea
    return done


def answers(done: Finished) -> dict[str, dict[str, str]]:
    return {fields["label"]: fields for fields in facts(done, "answer")}


def stats(done: Finished) -> dict[str, int]:
    """The last statistics OTP printed: {{AppId, Cmd, RBit}, send|recv[, Result]} -> count."""
    return {f["key"]: int(f["value"]) for f in facts(done, "stat")}


async def test_otp_decodes_edge_case_answers_with_default_decode_options(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """5005 with a zero-filled Terminal-Information / IMEI in Failed-AVP (RFC 6733 §7.5), 3003
    as an E-bit answer-message (§7.2), 5001 with the unknown M-bit AVP (§4.1, §7.5), 5004 with
    Failed-AVP {Terminal-Information {Software-Version}} and Experimental-Result 5422 without
    Result-Code (TS 29.272 §7.4.3): OTP decodes all of them without a single error, with its
    default string_decode and strict_mbit."""
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    steps = (
        ecr_term("no_terminal", terminal=False)
        + ecr_term("no_imei", imei=None, sv="01")
        + ecr_term("other_realm", realm="other.realm")
        + ecr_term("unknown_mbit", unknown_mbit=99999)
        + ecr_term("sv_123", sv="123")
        + ecr_term("tac_unknown", imei="35111111123456")
        + ecr_term("known", imei="35209900123456", sv="07")
    )
    done = await run_edges(escript, tmp_path, diameter_port(gateway), steps)
    got = answers(done)
    assert len(got) == 7, done.explain()
    for label, fields in got.items():
        assert fields["errors"] == "[]", (label, fields)
        if label != "other_realm":
            assert (fields["name"], fields["flags"]) == ("'ECA'", "[proxiable]"), fields

    def outcome(label: str) -> tuple[str, str, str]:
        fields = got[label]
        return fields["result_code"], fields["experimental"], fields["status"]

    assert outcome("no_terminal") == ("5005", "none", "none")
    # A zero-filled Grouped AVP: header only, no payload (RFC 6733 §7.5).
    assert got["no_terminal"]["failed"] == "[{1401,10415,'Terminal-Information',<<>>}]"
    assert outcome("no_imei") == ("5005", "none", "none")
    assert got["no_imei"]["failed"] == "[{1402,10415,'IMEI',<<0>>}]"

    realm = got["other_realm"]
    assert (realm["name"], realm["flags"]) == ("'answer-message'", "[proxiable,error]"), realm
    assert realm["result_code"] == "3003" and realm["failed"] == "none", realm

    assert outcome("unknown_mbit") == ("5001", "none", "none")
    assert got["unknown_mbit"]["failed"] == '[{99999,undefined,undefined,<<"abcd">>}]'
    assert "{diameter_avp,99999,undefined,true," in got["unknown_mbit"]["msg"]  # M bit kept

    assert outcome("sv_123") == ("5004", "none", "none")
    assert "'Terminal-Information',[{'Software-Version',[\"123\"]}]" in got["sv_123"]["msg"]
    assert "{'IMEI'" not in got["sv_123"]["msg"]  # only the offending AVP

    assert outcome("tac_unknown") == ("none", "{10415,5422}", "none")
    assert outcome("known") == ("2001", "none", "0")

    counters = stats(done)
    assert counters["{{16777252,324,0},recv,{'s13_Experimental-Result',10415,5422}}"] == 1
    assert counters["{{16777252,324,0},recv,{'Result-Code',5005}}"] == 2
    assert facts(done, "down"), done.explain()


async def test_gateway_dwr_answered_by_otp_and_link_stays_up(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """Our Tw (6 s, +-2 s jitter) fires on the idle link: OTP decodes our DWR and answers it
    2001 (RFC 6733 §5.5, RFC 3539); the same connection then still carries an ECR."""
    gateway = await start_gateway(EIR_DIAMETER_WATCHDOG_SECONDS="6")
    steps = (
        "{watchdog_timer_ms, 30000}.\n"
        + ecr_term("before")
        + "{idle, 10000}.\n"
        + ecr_term("after", imei="35693803564380")
    )
    done = await run_edges(escript, tmp_path, diameter_port(gateway), steps)
    got = answers(done)
    assert [(f["result_code"], f["status"], f["errors"]) for f in got.values()] == [
        ("2001", "0", "[]"),
        ("2001", "1", "[]"),
    ]
    counters = stats(done)
    assert counters.get("{{0,280,1},recv}", 0) >= 1, done.explain()  # our DWR reached OTP
    assert counters.get("{{0,280,0},send,{'Result-Code',2001}}", 0) == counters["{{0,280,1},recv}"]
    assert "{{0,280,1},send}" not in counters  # OTP's own watchdog did not fire
    # One connection all along: no second CER, no watchdog state change on OTP's side.
    assert counters["{{0,257,1},send}"] == 1
    assert not [e for e in facts(done, "event") if "watchdog" in e["info"]][1:], done.explain()
    text = gateway.metrics.render().decode()
    assert (
        metric_value(text, "diameter_messages_total", command="DWA", direction="in", result="") >= 1
    )


async def test_otp_watchdog_dwa_decodes_cleanly(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """OTP's Tw (6 s) fires first: our DWAs come back 2001; then remove_transport's DPR gets our
    DPA well within OTP's dpa_timeout."""
    gateway = await start_gateway()  # gateway Tw 30 s
    steps = "{watchdog_timer_ms, 6000}.\n{idle, 10000}.\n" + ecr_term("after")
    done = await run_edges(escript, tmp_path, diameter_port(gateway), steps)
    counters = stats(done)
    assert counters.get("{{0,280,1},send}", 0) >= 1, done.explain()
    assert counters.get("{{0,280,0},recv,{'Result-Code',2001}}", 0) == counters["{{0,280,1},send}"]
    assert counters.get("{{0,280,0},recv}", 0) == counters["{{0,280,1},send}"]
    (after,) = facts(done, "answer")
    assert (after["result_code"], after["errors"]) == ("2001", "[]")
    (disconnected,) = facts(done, "disconnected")
    assert int(disconnected["ms"]) < 4000, done.explain()
    assert facts(done, "down"), done.explain()


# -- OTP's decoder, default options, on answers and requests captured from a raw MME ----------


async def test_otp_default_decode_of_second_cea_gateway_dwr_and_error_answers(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """A second CER on the open connection (OTP's diameter:call refuses to send one, so a raw
    scapy MME sends it; RFC 6733 §5.6 R-Open R-Rcv-CER -> R-Snd-CEA), the gateway's own DWR,
    and every error answer of the scapy suite, decoded by OTP with string_decode = true and
    strict_mbit = true: no errors."""
    pytest.importorskip("scapy.contrib.diameter")
    from scapy.contrib.diameter import DiamAns

    from tests.interop.test_scapy_mme import (
        AVP,
        CASES,
        MME_HOST,
        MME_REALM,
        DiamReq,
        ScapyMme,
        cer,
        ecr,
    )

    gateway = await start_gateway(EIR_DIAMETER_WATCHDOG_SECONDS="6")
    port = diameter_port(gateway)
    captured: dict[str, bytes] = {}
    mme, cea = await ScapyMme.open(port)
    captured["CEA"] = cea.wire
    identity = [AVP(264, val=MME_HOST), AVP(296, val=MME_REALM)]
    try:
        second = await mme.exchange(cer())
        assert second.result_code == 2001, second
        captured["CEA_second"] = second.wire
        for name, case in CASES.items():
            captured[name.replace(" ", "_")] = (await mme.exchange(case.request())).wire
        dwr = await mme.receive(timeout=10)  # our Tw: 6 s +- 2 s
        assert dwr is not None and dwr.flags & 0x80 and dwr.packet.drCode == 280, dwr
        captured["DWR_gateway"] = dwr.wire
        await mme.send(
            bytes(
                DiamAns(
                    280,
                    drHbHId=dwr.packet.drHbHId,
                    drEtEId=dwr.packet.drEtEId,
                    avpList=[AVP(268, val=2001), *identity],
                )
            )
        )
        assert (await mme.exchange(ecr())).result_code == 2001  # the link stayed up
        captured["DWA"] = (
            await mme.exchange(bytes(DiamReq(280, drHbHId=0xD1, drEtEId=0xD1, avpList=identity)))
        ).wire
        dpr = DiamReq(282, drHbHId=0xD2, drEtEId=0xD2, avpList=[*identity, AVP(273, val=0)])
        captured["DPA"] = (await mme.exchange(bytes(dpr))).wire
    finally:
        await mme.close()
    decoded = await otp_decode(escript, tmp_path, captured, ESCRIPT)
    assert set(decoded) == set(captured)
    for label, fields in decoded.items():
        assert fields["errors"] == "[]", (label, fields)
    assert decoded["CEA_second"]["name"] == "'CEA'"
    assert "{'Result-Code',2001}" in decoded["CEA_second"]["msg"]
    assert decoded["DWR_gateway"]["name"] == "'DWR'"
    assert "{'Origin-Host',\"eir.localdomain\"}" in decoded["DWR_gateway"]["msg"]
