"""ME-Identity-Check end to end: a real gateway on loopback, an MME client from the test suite.

Expected statuses follow the embedded default config: config/tac-sample.txt,
config/lists-sample.csv, config/registry-declarations.json and the DESIGN.md §4 policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from diameter.codec import Avp, Message
from diameter.dictionary.ts29272_s13 import VENDOR
from gateway.imei import luhn_check_digit
from gateway.lists import ListStore, make_entry
from tests.e2e.conftest import StartGateway, connect_mme, metric_value, scrape

WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2
RESULT_CODE, EXPERIMENTAL_RESULT, EQUIPMENT_STATUS, FAILED_AVP = 268, 297, 1445, 279


def status_of(answer: Message) -> int | None:
    avp = answer.find(EQUIPMENT_STATUS, VENDOR)
    return None if avp is None else avp.value


def with_cd(body: str) -> str:
    return body + luhn_check_digit(body)


def assert_success(answer: Message, status: int) -> None:
    assert answer.get("Result-Code") == 2001, answer
    assert answer.find(EXPERIMENTAL_RESULT) is None
    assert status_of(answer) == status, answer


# (IMEI as sent, IMSI, expected Equipment-Status, deciding reason) for the default config.
CASES = [
    ("35209900123456", None, WHITELISTED, "clean"),  # declared range, TAC known
    (with_cd("35209900123456"), None, WHITELISTED, "clean"),  # 15 digits, good Luhn
    ("3520990012345601", None, WHITELISTED, "clean"),  # 16-digit IMEISV form
    (
        "35209900123456" + str((int(luhn_check_digit("35209900123456")) + 1) % 10),
        None,
        BLACKLISTED,
        "bad_check_digit",
    ),
    ("3520990012345", None, BLACKLISTED, "malformed"),  # 13 digits
    ("352099001234567890", None, BLACKLISTED, "malformed"),  # 18 digits
    ("3520990012345A", None, BLACKLISTED, "malformed"),  # not decimal
    ("35693803564380", None, BLACKLISTED, "blacklisted"),  # blacklisted IMEI
    ("35000001000001", None, BLACKLISTED, "blacklisted"),  # barred TAC
    ("35332011900123", None, GREYLISTED, "greylisted"),  # grey range
    ("49015420323751", None, WHITELISTED, "whitelisted"),  # white IMEI
    ("00000000000000", None, GREYLISTED, "null_or_test"),
    ("35111111123456", None, GREYLISTED, "tac_unknown"),
    ("35209900600000", None, BLACKLISTED, "registry_not_manufactured"),  # outside declared ranges
    ("35209900176148", None, BLACKLISTED, "registry_reported"),  # reported stolen
    ("86000001123456", None, WHITELISTED, "registry_unknown"),  # owner not participating
]


@pytest.mark.parametrize(("imei", "imsi", "status", "reason"), CASES)
async def test_every_reason_of_the_default_policy(
    start_gateway: StartGateway, imei: str, imsi: str | None, status: int, reason: str
) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        answer = await mme.check(imei, imsi=imsi)
        assert_success(answer, status)
        _, text = await scrape(gateway)
        label = {0: "whitelisted", 1: "blacklisted", 2: "greylisted"}[status]
        assert metric_value(text, "eir_checks_total", interface="s13", status=label, reason=reason) == 1.0
    finally:
        await mme.close()


async def test_answer_follows_ts29272_and_rfc6733(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        request = mme.micr(
            "35209900123456",
            sv="01",
            imsi="001010123456789",
            proxy_info=(("relay1.test", b"\x01state"), ("relay2.test", b"two")),
        )
        request.end_to_end = 0x1234ABCD
        answer = await mme.send(request)
        assert not answer.is_request and answer.is_proxiable and not answer.is_error
        assert answer.end_to_end == 0x1234ABCD
        assert answer.command_code == 324 and answer.application_id == 16777252
        assert answer.avps[0].code == 263 and answer.avps[0].value == request.get("Session-Id")
        vsai = answer.get("Vendor-Specific-Application-Id")
        assert [(a.code, a.value) for a in vsai] == [(266, 10415), (258, 16777252)]
        assert answer.get("Auth-Session-State") == 1
        assert answer.get("Origin-Host") == "eir.localdomain"
        assert answer.get("Origin-Realm") == "localdomain"
        assert answer.find(293) is None and answer.find(283) is None  # no Destination-*
        proxies = [a.data for a in answer.find_all(284)]
        assert proxies == [a.data for a in request.find_all(284)]
        assert_success(answer, WHITELISTED)
    finally:
        await mme.close()


async def test_software_version_user_name_and_meid_variants(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        assert_success(await mme.check("35209900123456", sv="07"), WHITELISTED)
        assert_success(await mme.check("35209900123456"), WHITELISTED)  # no Software-Version
        assert_success(await mme.check("35209900123456", imsi="001010123456789"), WHITELISTED)
        # IMEI and 3GPP2-MEID: only the IMEI is evaluated (TS 29.272 Table 6.2.1.1/1).
        answer = await mme.check("35693803564380", meid=b"\xa0\x00\x00\x01\x23\x45\x67")
        assert_success(answer, BLACKLISTED)
    finally:
        await mme.close()


async def test_missing_terminal_information_imei_or_meid_only_is_5005(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        for request, missing in (
            (mme.micr(terminal_information=False), 1401),
            (mme.micr(None, sv="01"), 1402),
            (mme.micr(None, meid=b"\xa0\x00\x00\x01\x23\x45\x67"), 1402),
        ):
            answer = await mme.send(request)
            assert answer.get("Result-Code") == 5005, answer
            assert status_of(answer) is None
            assert not answer.is_error
            assert answer.get("Auth-Session-State") == 1
            (failed,) = answer.get("Failed-AVP")
            assert (failed.code, failed.vendor) == (missing, VENDOR)
        # The two that reached the S13 application (Terminal-Information present) are counted;
        # a missing Terminal-Information is refused by the generic CCF check before it.
        _, text = await scrape(gateway)
        assert metric_value(text, "eir_checks_total", interface="s13", status="rejected", reason="missing_imei") == 2
    finally:
        await mme.close()


async def test_imei_imsi_pair_and_list_change_in_a_running_gateway(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    store = ListStore(gateway.config.lists.database)
    try:
        lab_device, lab_sim = "01234500000017", "001010000000001"
        assert_success(await mme.check(lab_device, imsi=lab_sim), WHITELISTED)
        version = gateway.lists_version
        # Bar the whole lab TAC: the pair exception must still win for the test SIM only.
        store.add(make_entry("black", "tac", "01234500", reason="lab devices barred"))
        for _ in range(100):
            if gateway.lists_version > version:
                break
            await asyncio.sleep(0.05)
        assert gateway.lists_version > version
        assert_success(await mme.check(lab_device, imsi=lab_sim), WHITELISTED)
        assert_success(await mme.check(lab_device, imsi="001019999999999"), BLACKLISTED)
        assert_success(await mme.check(lab_device), BLACKLISTED)
        assert mme.client.is_open  # the reload dropped no peer
    finally:
        store.close()
        await mme.close()


async def test_equipment_unknown_when_configured(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(EIR_POLICY_UNKNOWN_EQUIPMENT="tac_unknown")
    mme = await connect_mme(gateway)
    try:
        answer = await mme.check("35111111123456")
        assert answer.find(RESULT_CODE) is None  # TS 29.272 §7.4.3: no Result-Code
        assert status_of(answer) is None
        experimental = answer.get("Experimental-Result")
        assert [(a.code, a.value) for a in experimental] == [(266, 10415), (298, 5422)]
        assert_success(await mme.check("35209900123456"), WHITELISTED)
        _, text = await scrape(gateway)
        assert (
            metric_value(text, "eir_checks_total", interface="s13", status="equipment_unknown", reason="tac_unknown")
            == 1
        )
    finally:
        await mme.close()


async def test_monitor_mode_answers_whitelisted_and_counts_enforcement(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(EIR_POLICY_MONITOR_MODE="true")
    mme = await connect_mme(gateway)
    try:
        assert_success(await mme.check("35693803564380"), WHITELISTED)
        assert_success(await mme.check("3520990012345"), WHITELISTED)
        _, text = await scrape(gateway)
        assert (
            metric_value(text, "eir_checks_total", interface="s13", status="blacklisted", reason="blacklisted") == 1
        )
        assert metric_value(text, "eir_checks_total", interface="s13", status="blacklisted", reason="malformed") == 1
        assert metric_value(text, "eir_monitor_mode") == 1
    finally:
        await mme.close()


async def test_registry_unavailable_fails_open_within_budget(start_gateway: StartGateway) -> None:
    # A registry that refuses connections: the check still answers, with registry_unavailable.
    gateway = await start_gateway(
        EIR_REGISTRY_BACKEND="http",
        EIR_REGISTRY_URL="http://127.0.0.1:9",
        EIR_REGISTRY_BUDGET_SECONDS="0.2",
        EIR_REGISTRY_RETRIES="0",
    )
    mme = await connect_mme(gateway)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert_success(await mme.check("35209900123456"), WHITELISTED)
        assert loop.time() - started < 2.0
        _, text = await scrape(gateway)
        assert (
            metric_value(
                text, "eir_checks_total", interface="s13", status="whitelisted",
                reason="registry_unavailable",
            )
            == 1
        )
    finally:
        await mme.close()


async def test_clone_detection(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        EIR_CLONE_DETECTION_ENABLED="true", EIR_CLONE_DETECTION_THRESHOLD="1"
    )
    mme = await connect_mme(gateway)
    try:
        assert_success(await mme.check("35209900123456", imsi="001010000000011"), WHITELISTED)
        answer = await mme.check("35209900123456", imsi="001010000000022")
        assert_success(answer, GREYLISTED)
    finally:
        await mme.close()


async def test_clone_detection_remembers_across_a_restart(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    # The observation log (written at stop at the latest) seeds the tracker of the next start.
    state = str(tmp_path / "shared-state")
    env = {
        "EIR_CLONE_DETECTION_ENABLED": "true",
        "EIR_CLONE_DETECTION_THRESHOLD": "1",
        "EIR_STATE_DIRECTORY": state,
    }
    first = await start_gateway(**env)
    mme = await connect_mme(first)
    try:
        assert_success(await mme.check("35209900123456", imsi="001010000000011"), WHITELISTED)
    finally:
        await mme.close()
    await first.stop()
    second = await start_gateway(**env)
    mme = await connect_mme(second)
    try:
        answer = await mme.check("35209900123456", imsi="001010000000022")
        assert_success(answer, GREYLISTED)  # two IMSIs within the window, one before the restart
    finally:
        await mme.close()


async def test_metrics_health_and_readiness_over_http(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        await mme.check("35209900123456")
        await mme.check("35693803564380")
        await mme.check("35693803564380")  # the same check again: its decision is reused
        status, text = await scrape(gateway)
        assert status == 200
        assert (
            metric_value(text, "diameter_messages_total", direction="in", command="ECR", result="")
            == 3
        )
        assert (
            metric_value(
                text, "diameter_messages_total", direction="out", command="ECA", result="2001"
            )
            == 3
        )
        assert (
            metric_value(text, "diameter_messages_total", direction="in", command="CER", result="")
            == 1
        )
        assert metric_value(text, "diameter_peers", state="R_OPEN") == 1
        assert metric_value(text, "eir_check_duration_seconds_count", interface="s13") == 3
        assert metric_value(text, "eir_decision_cache_hits_total") == 1
        assert metric_value(text, "eir_decision_cache_entries") == 2
        # DESIGN.md §6 registry families, also with the embedded (local) backend: no requests.
        assert metric_value(text, "registry_requests_total", outcome="ok") == 0
        assert metric_value(text, "registry_circuit_state") == 0
        assert "registry_cache_events_total" in text
        assert "registry_request_duration_seconds_count" in text
        assert metric_value(text, "eir_tac_entries") > 0
        assert "process_cpu_seconds_total" in text
        assert metric_value(text, "eir_observations_dropped_total") == 0
        assert "eir_observations_recorded_total" in text
        assert 'eir_event_loop_lag_seconds_bucket{le="0.002"}' in text
        assert "35209900123456" not in text and "35693803564380" not in text  # no IMEI labels
        assert (await scrape(gateway, "/healthz"))[0] == 200
        assert (await scrape(gateway, "/readyz"))[0] == 200
    finally:
        await mme.close()


async def test_unknown_mandatory_avp_and_wrong_realm(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    mme = await connect_mme(gateway)
    try:
        request = mme.micr("35209900123456")
        request.avps.append(Avp(4242, 0x40, 0, b"\x00\x00\x00\x01"))
        answer = await mme.send(request)
        assert answer.get("Result-Code") == 5001
        (failed,) = answer.get("Failed-AVP")
        assert failed.code == 4242
        answer = await mme.send(mme.micr("35209900123456", destination_realm="elsewhere"))
        assert answer.is_error and answer.get("Result-Code") == 3003
    finally:
        await mme.close()


async def test_event_loop_lag_is_sampled_while_serving(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    counts = []
    for _ in range(50):  # the probe samples five times a second; give it up to 10 s
        _, text = await scrape(gateway)
        counts.append(metric_value(text, "eir_event_loop_lag_seconds_count"))
        if counts[-1] >= 2 and counts[-1] > counts[0]:  # it moves, whatever the first scrape saw
            break
        await asyncio.sleep(0.2)
    assert counts[-1] >= 2 and counts[-1] > counts[0]
    assert metric_value(text, 'eir_event_loop_lag_seconds_bucket', le="+Inf") == counts[-1]
