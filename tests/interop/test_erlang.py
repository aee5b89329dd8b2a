"""Erlang/OTP diameter (Debian ``erlang-base`` + ``erlang-diameter``, OTP 25) as an MME.

``erlang/s13_mme.escript`` starts OTP's diameter application with the RFC 6733 base dictionary
(``diameter_gen_base_rfc6733``) and ``erlang/s13.dia`` (compiled at test time by
``diameter_make``), connects to the gateway, and prints the answers as OTP decoded them with the
``errors`` OTP found in each (``answer_errors = callback``), so OTP's strict decoder judges every
CEA, ECA, E-bit answer-message and DWA/DPA of ours.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import metric_value
from tests.e2e.test_s13 import CASES
from tests.interop.conftest import (
    HERE,
    WHITELISTED,
    Finished,
    StartGateway,
    diameter_port,
    make_pki,
    require_tool,
    run_process,
    tls_env,
)

ESCRIPT = HERE / "erlang" / "s13_mme.escript"
DICTIONARY = HERE / "erlang" / "s13.dia"


@pytest.fixture(scope="module")
def escript() -> str:
    path = require_tool(
        "escript", "Debian erlang-base + erlang-diameter: Erlang/OTP diameter interop"
    )
    if not _otp_has_diameter(path):
        pytest.skip("Erlang/OTP diameter application not installed (Debian erlang-diameter)")
    return path


def _otp_has_diameter(escript_path: str) -> bool:
    erl = Path(escript_path).with_name("erl")
    probe = subprocess.run(
        [
            str(erl),
            "-noshell",
            "-eval",
            "halt(case code:lib_dir(diameter) of {error, _} -> 1; _ -> 0 end).",
        ],
        capture_output=True,
        timeout=180,  # a bound: erl starts in a second here, in a minute in the emulated SCTP guest
        check=False,
    )
    return probe.returncode == 0


def erl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_term(index: int, check: dict[str, Any]) -> str:
    def opt(key: str) -> str:
        return erl_string(check[key]) if check.get(key) is not None else "undefined"

    proxies = ", ".join(
        f"{{{erl_string(host)}, <<{','.join(str(b) for b in state)}>>}}"
        for host, state in check.get("proxy_info", ())
    )
    realm = erl_string(check.get("realm", "localdomain"))
    return f"{{check, {index}, {opt('imei')}, {opt('imsi')}, {opt('sv')}, {realm}, [{proxies}]}}.\n"


def parse(stdout: str) -> list[tuple[str, dict[str, str]]]:
    lines = []
    for line in stdout.splitlines():
        tag, *fields = line.split("\t")
        lines.append((tag, dict(field.split("=", 1) for field in fields)))
    return lines


def facts(done: Finished, tag: str) -> list[dict[str, str]]:
    return [fields for t, fields in parse(done.stdout) if t == tag]


async def run_mme(
    escript: str,
    tmp_path: Path,
    port: int,
    checks: list[dict[str, Any]],
    *,
    watchdog_wait_ms: int | None = None,
    timeout: float = 25,
    refused: bool = False,
    tls: tuple[Path, Path, Path] | None = None,
    extra_terms: str = "",
) -> Finished:
    spec = tmp_path / "mme.terms"
    text = '{origin_host, "mme.otp.test"}.\n{origin_realm, "otp.test"}.\n'
    text += "".join(check_term(i, c) for i, c in enumerate(checks))
    if watchdog_wait_ms is not None:
        text += f"{{watchdog_wait_ms, {watchdog_wait_ms}}}.\n"
    if tls is not None:
        text += "{tls, " + ", ".join(erl_string(str(p)) for p in tls) + "}.\n"
    text += extra_terms
    spec.write_text(text)
    done = await run_process(
        [escript, str(ESCRIPT), str(DICTIONARY), "127.0.0.1", str(port), str(spec)],
        timeout=timeout,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and facts(done, "done"), done.explain()
    assert not facts(done, "cea_timeout"), done.explain()
    assert bool(facts(done, "cea_failed")) == refused, done.explain()
    return done


def assert_clean_eca(fields: dict[str, str]) -> None:
    """OTP decoded an ME-Identity-Check-Answer with its strict codec and found nothing wrong."""
    assert fields["errors"] == "[]", fields
    assert fields["name"] == "'ECA'", fields
    assert fields["flags"] == "[proxiable]", fields  # P copied, no E (TS 29.272 §7.2.20)


async def test_otp_decodes_every_default_answer_without_errors(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    gateway = await start_gateway()
    checks: list[dict[str, Any]] = [{"imei": imei, "imsi": imsi} for imei, imsi, _, _ in CASES]
    checks.append(
        {
            "imei": "35209900123456",
            "imsi": "001010123456789",
            "sv": "07",
            "proxy_info": [("relay1.test", b"\x01\x02\x03"), ("relay2.test", b"two")],
        }
    )
    done = await run_mme(escript, tmp_path, diameter_port(gateway), checks)

    (cea,) = facts(done, "cea")
    assert cea["errors"] == "[]", cea
    assert "{'Result-Code',2001}" in cea["msg"]
    assert "{'Auth-Application-Id',[16777252]}" in cea["msg"]  # S13 offered (RFC 6733 §5.3.2)
    answers = facts(done, "eca")
    assert len(answers) == len(checks), done.explain()
    expected = [status for _, _, status, _ in CASES] + [WHITELISTED]
    for fields, status in zip(answers, expected, strict=True):
        assert_clean_eca(fields)
        assert fields["result_code"] == "2001", fields
        assert fields["experimental"] == "none", fields
        assert fields["status"] == str(status), fields
    # RFC 6733 §6.2: every Proxy-Info copied, in order.
    assert answers[-1]["proxy_hosts"] == '[<<"relay1.test">>,<<"relay2.test">>]'


async def test_otp_decodes_5422_5005_and_e_bit_answer_message(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    checks = [
        {"imei": "35111111123456"},  # tac_unknown -> 5422 (TS 29.272 §7.4.3)
        {"imei": None, "sv": "01"},  # Terminal-Information without IMEI -> 5005 (RFC 6733 §7.5)
        {"imei": "35209900123456", "realm": "other.realm"},  # 3003, E bit (RFC 6733 §7.1.3)
    ]
    done = await run_mme(escript, tmp_path, diameter_port(gateway), checks)
    unknown, missing, realm = facts(done, "eca")

    assert_clean_eca(unknown)
    assert (unknown["result_code"], unknown["status"]) == ("none", "none")
    assert unknown["experimental"] == "{10415,5422}"

    assert_clean_eca(missing)
    assert missing["result_code"] == "5005" and missing["status"] == "none"
    assert missing["failed"] == "[{1402,10415}]"  # zero-filled IMEI, vendor 10415

    # OTP decodes an E-bit answer with the base answer-message CCF (RFC 6733 §7.2).
    assert realm["errors"] == "[]", realm
    assert realm["name"] == "'answer-message'", realm
    assert realm["flags"] == "[proxiable,error]", realm
    assert realm["result_code"] == "3003", realm


async def test_otp_watchdog_and_disconnect(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """OTP's watchdog (Tw 6 s, +-2 s jitter) sends DWRs on the idle link: the gateway answers
    2001; meanwhile the gateway lists OTP as an open peer; remove_transport sends a DPR and
    the DPA comes back well before OTP's dpa_timeout (5 s)."""
    gateway = await start_gateway()  # gateway Tw 30 s: OTP's watchdog fires first
    port = diameter_port(gateway)
    seen: set[str] = set()

    async def watch_peers() -> None:
        while True:
            seen.update(p.origin_host for p in gateway.server.open_peers)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_peers())
    try:
        done = await run_mme(
            escript, tmp_path, port, [{"imei": "35209900123456"}], watchdog_wait_ms=9000
        )
    finally:
        watcher.cancel()
    assert seen == {"mme.otp.test"}
    stats = {f["key"]: int(f["value"]) for f in facts(done, "stat")}
    assert stats.get("{{0,280,1},send}", 0) >= 1, done.explain()  # OTP sent DWR
    assert stats.get("{{0,280,0},recv,{'Result-Code',2001}}", 0) == stats["{{0,280,1},send}"]
    assert stats.get("{{16777252,324,0},recv,{'Result-Code',2001}}") == 1
    (disconnected,) = facts(done, "disconnected")
    assert int(disconnected["ms"]) < 4000, done.explain()
    assert facts(done, "down"), done.explain()
    for _ in range(50):
        if not gateway.server.open_peers:
            break
        await asyncio.sleep(0.05)
    assert not gateway.server.open_peers


async def test_gateway_watchdog_and_dpr_towards_otp(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """The gateway's own requests judged by OTP: our DWR (Tw 6 s; OTP's Tw set to 30 s so ours
    fires first) gets OTP's DWA, and our DPR on stop() gets OTP's DPA and brings OTP's peer down."""
    gateway = await start_gateway(EIR_DIAMETER_WATCHDOG_SECONDS="6")

    def counted(command: str, direction: str, result: str) -> float:
        text = gateway.metrics.render().decode()
        return metric_value(
            text, "diameter_messages_total", command=command, direction=direction, result=result
        )

    client = asyncio.create_task(
        run_mme(
            escript,
            tmp_path,
            diameter_port(gateway),
            [{"imei": "35209900123456"}],
            extra_terms="{watchdog_timer_ms, 30000}.\n{await_gateway_dpr_ms, 20000}.\n",
        )
    )
    try:
        for _ in range(150):  # our Tw: 6 s +- 2 s
            if counted("DWA", "in", "") >= 1 or client.done():
                break
            await asyncio.sleep(0.1)
        assert counted("ECA", "out", "2001") == 1
        assert counted("DWA", "in", "") >= 1, "OTP did not answer our DWR"
        assert counted("DWR", "in", "") == 0  # OTP's own watchdog did not fire
        await asyncio.wait_for(gateway.stop(), 15)
        assert counted("DPA", "in", "") == 1
    finally:
        done = await client
    assert facts(done, "waiting") and facts(done, "down"), done.explain()


async def test_otp_refused_by_peer_admission_reads_3010(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """An Origin-Host outside diameter.allowed_hosts: CEA 3010 DIAMETER_UNKNOWN_PEER with the E
    bit (RFC 6733 §5.3, §7.1.3), which OTP decodes cleanly and reports as a refused CER."""
    gateway = await start_gateway(EIR_DIAMETER_ALLOWED_HOSTS="mme.allowed.test")
    done = await run_mme(
        escript, tmp_path, diameter_port(gateway), [{"imei": "35209900123456"}], refused=True
    )
    (failed,) = facts(done, "cea_failed")
    assert (failed["result_code"], failed["error_bit"], failed["errors"]) == ("3010", "true", "[]")
    assert not facts(done, "eca")
    assert not gateway.server.open_peers


async def test_otp_over_mutual_tls(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """OTP's ssl (TLS from the first byte, {ssl_options, true}) against our tls:// listener with
    client certificates required: CER/CEA, ECAs and DPR/DPA inside TLS."""
    pki = await make_pki(tmp_path, "otp", ("eir.localdomain", "mme.otp.test"))
    gateway = await start_gateway(**tls_env(pki))
    transport, _, port = gateway.diameter_sockets[0]
    assert transport == "tls"
    done = await run_mme(
        escript,
        tmp_path,
        port,
        [{"imei": "35209900123456"}, {"imei": "35693803564380"}],
        tls=(pki["mme.otp.test"], pki["mme.otp.test.key"], pki["ca"]),
    )
    (cea,) = facts(done, "cea")
    assert cea["errors"] == "[]" and "{'Result-Code',2001}" in cea["msg"]
    statuses = [(f["result_code"], f["status"], f["errors"]) for f in facts(done, "eca")]
    assert statuses == [("2001", "0", "[]"), ("2001", "1", "[]")]
    assert facts(done, "down")


# -- OTP's decoder on answers provoked by scapy ------------------------------------------------


async def otp_decode(
    escript: str, tmp_path: Path, captured: dict[str, bytes], script: Path = ESCRIPT
) -> dict[str, dict[str, str]]:
    """OTP's decoder on captured wire messages: ``script decode`` prints one fact per label."""
    hex_file = tmp_path / "captured.hex"
    hex_file.write_text("".join(f"{label} {wire.hex()}\n" for label, wire in captured.items()))
    done = await run_process(
        [escript, str(script), "decode", str(DICTIONARY), str(hex_file)], timeout=20, cwd=tmp_path
    )
    assert done.returncode == 0 and facts(done, "done"), done.explain()
    return {f["label"].strip('"'): f for f in facts(done, "decoded")}


async def capture(port: int, requests: dict[str, bytes]) -> dict[str, bytes]:
    from tests.interop.test_scapy_mme import AVP, MME_HOST, MME_REALM, DiamReq, ScapyMme

    captured = {}
    mme, cea = await ScapyMme.open(port)
    captured["CEA"] = cea.wire
    try:
        for label, wire in requests.items():
            captured[label] = (await mme.exchange(wire)).wire
        identity = [AVP(264, val=MME_HOST), AVP(296, val=MME_REALM)]
        dwr = DiamReq(280, drHbHId=0xD1, drEtEId=0xD1, avpList=identity)
        captured["DWA"] = (await mme.exchange(bytes(dwr))).wire
        dpr = DiamReq(282, drHbHId=0xD2, drEtEId=0xD2, avpList=[*identity, AVP(273, val=0)])
        captured["DPA"] = (await mme.exchange(bytes(dpr))).wire
    finally:
        await mme.close()
    return captured


async def test_otp_decodes_error_answers_provoked_by_scapy(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    """Every answer the scapy MME provokes (CEA, DWA, DPA, 5001, 5004, 5005, 5008, 5009, 5014
    ECAs and 3001/3002/3003/3008/3009 answer-messages) decodes in OTP without a single error."""
    pytest.importorskip("scapy.contrib.diameter")
    from tests.interop.test_scapy_mme import CASES

    gateway = await start_gateway()
    requests = {name.replace(" ", "_"): case.request() for name, case in CASES.items()}
    captured = await capture(diameter_port(gateway), requests)
    decoded = await otp_decode(escript, tmp_path, captured)
    assert set(decoded) == set(captured)
    for label, fields in decoded.items():
        assert fields["errors"] == "[]", (label, fields)
    e_bit = {n.replace(" ", "_") for n, c in CASES.items() if c.e_bit}
    for label in e_bit:
        assert decoded[label]["name"] == "'answer-message'", decoded[label]
    for label in set(requests) - e_bit:
        assert decoded[label]["name"] == "'ECA'", decoded[label]
    assert [decoded[n]["name"] for n in ("CEA", "DWA", "DPA")] == ["'CEA'", "'DWA'", "'DPA'"]


async def test_otp_decodes_framing_error_answers(
    start_gateway: StartGateway, escript: str, tmp_path: Path
) -> None:
    pytest.importorskip("scapy.contrib.diameter")
    from tests.interop.test_scapy_mme import ScapyMme, ecr, with_length

    gateway = await start_gateway()
    captured = {}
    for label, mangle in (
        ("version_2", lambda w: b"\x02" + w[1:]),
        ("length_not_multiple_of_4", lambda w: with_length(w, len(w) + 2) + b"\0\0"),
    ):
        mme, _ = await ScapyMme.open(diameter_port(gateway))
        try:
            await mme.send(mangle(ecr()))
            answer = await mme.receive()
            assert answer is not None
            captured[label] = answer.wire
        finally:
            await mme.close()
        await asyncio.sleep(0.05)
    decoded = await otp_decode(escript, tmp_path, captured)
    for label, fields in decoded.items():
        assert fields["errors"] == "[]", (label, fields)
