"""`eir-gateway check | lists | tac`: output, exit codes, errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # state (./var) of the embedded default goes here


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "35693803564380")
    assert code == 0
    assert "Equipment-Status BLACKLISTED (1)" in out
    assert "blacklisted" in out and "stolen: reported to the operator" in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "012345000000179", "--imsi", "001010000000001",
                       "--sv", "05", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["equipment_status"] == "WHITELISTED"
    assert report["decided_by"] == "whitelisted"
    assert report["imei"]["imeisv"] == "0123450000001705"
    assert report["imsi"] == "00101**********"  # masked by default
    assert report["list_entries"][0]["reason"] == "lab device allowed with its test SIM only"


def test_check_malformed_and_monitor_mode(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "check", "12AB", "--json")
    assert code == 0 and json.loads(out)["decided_by"] == "malformed"
    monkeypatch.setenv("EIR_POLICY_MONITOR_MODE", "true")
    code, out, _ = run(capsys, "check", "35693803564380")
    assert "monitor mode: enforcement would answer BLACKLISTED (1)" in out
    assert "Equipment-Status WHITELISTED (0)" in out


def test_config_error_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[diameter]\nwatchdog_seconds = 1\n")
    code, _, err = run(capsys, "check", "35693803564380", "--config", str(bad))
    assert code == 2 and "diameter.watchdog_seconds" in err and str(bad) in err


def test_lists_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "lists", "add", "black", "imei", "352099001761481",
                       "--reason", "stolen")
    assert code == 0 and "added black imei 35209900176148" in out
    code, out, _ = run(capsys, "check", "35209900176148", "--json")
    assert json.loads(out)["equipment_status"] == "BLACKLISTED"
    code, out, _ = run(capsys, "lists", "show", "--list", "black", "--kind", "imei")
    assert "35209900176148  stolen" in out
    export = tmp_path / "out.csv"
    assert run(capsys, "lists", "export", str(export))[0] == 0
    assert "black,imei,35209900176148,,stolen" in export.read_text()
    code, out, _ = run(capsys, "lists", "remove", "black", "imei", "35209900176148")
    assert code == 0
    code, _, err = run(capsys, "lists", "remove", "black", "imei", "35209900176148")
    assert code == 1 and "no black imei entry" in err
    code, _, err = run(capsys, "lists", "add", "black", "imei", "123")
    assert code == 2 and "not a 14- or 15-digit IMEI" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("black,imei,35209900176148,,a\nblack,tac,1,,b\n")
    code, _, err = run(capsys, "lists", "import", str(bad))
    assert code == 1 and "bad.csv: row 2" in err and "nothing imported" in err


def test_tac_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "tac", "show", "35209900")
    assert code == 0 and "Example Handsets Ltd" in out
    src = tmp_path / "t.csv"
    src.write_text("35999999,New Maker,New Phone\nbad,row\n")
    code, _, err = run(capsys, "tac", "import", str(src))
    assert code == 1 and "t.csv:2" in err
    code, out, _ = run(capsys, "tac", "import", str(src), "--skip-bad")
    assert code == 0 and "1 bad lines" in out and "line 2:" in out
    code, out, _ = run(capsys, "tac", "show", "359999990000001")
    assert code == 0 and "New Maker" in out
    code, _, err = run(capsys, "tac", "show", "11111111")
    assert code == 1 and "not in" in err
