"""`eir-gateway check --interface n5g-eir`: the N5g-eir answer beside the S13 decision."""

from __future__ import annotations

import json

import pytest

from gateway.imei import luhn_check_digit
from tests.gateway.test_cli import _in_tmp, run

__all__ = ["_in_tmp"]  # autouse: the embedded default keeps its state in a temporary directory

BLACK = "35693803564380"  # on the sample blacklist


def test_pei_checked_as_s13_and_answered_as_n5g_eir(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--interface", "n5g-eir",
                       f"imei-{BLACK}{luhn_check_digit(BLACK)}")
    assert code == 0
    assert "Equipment-Status BLACKLISTED (1)" in out  # what S13 answers for the same IMEI
    assert 'N5g-eir     HTTP 200 application/json {"status":"BLACKLISTED"}' in out


def test_imeisv_pei_carries_the_software_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--interface", "n5g-eir", f"imeisv-{BLACK}07",
                       "--imsi", "001010000000001", "--json")
    report = json.loads(out)
    assert code == 0 and report["imei"]["imeisv"] == f"{BLACK}07"
    assert report["n5g_eir"] == {"status": 200, "content_type": "application/json",
                                 "body": {"status": "BLACKLISTED"}}


def test_unknown_equipment_is_404(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIR_POLICY_UNKNOWN_EQUIPMENT", "tac_unknown")
    code, out, _ = run(capsys, "check", "--interface", "n5g-eir", "imeisv-3511111112345601",
                       "--json")
    answer = json.loads(out)["n5g_eir"]
    assert code == 0 and answer["status"] == 404
    assert answer["body"]["cause"] == "ERROR_EQUIPMENT_UNKNOWN"


@pytest.mark.parametrize(
    ("pei", "status", "cause"),
    [
        ("mac-00-11-22-33-44-55", 404, "ERROR_EQUIPMENT_UNKNOWN"),
        ("imei-123", 400, "MANDATORY_QUERY_PARAM_INCORRECT"),
    ],
)
def test_peis_without_an_imei(capsys: pytest.CaptureFixture[str], pei: str, status: int,
                              cause: str) -> None:
    code, out, _ = run(capsys, "check", "--interface", "n5g-eir", pei)
    assert code == 0
    assert f"PEI         {pei}" in out and f"HTTP {status}" in out and cause in out


def test_sv_is_refused_with_n5g_eir(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--interface", "n5g-eir", f"imeisv-{BLACK}07",
                       "--sv", "01")
    assert code == 2 and "imeisv-" in err
