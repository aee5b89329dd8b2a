"""`eir-gateway check | lists | tac`: output, exit codes, errors on stderr."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diameter.transport.sockets import sctp_unavailable
from gateway.cli import main
from gateway.observations import ObservationLog


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


def test_check_invalid_sv_is_answered_5004_like_s13(capsys: pytest.CaptureFixture[str]) -> None:
    # gateway/s13.py refuses a Software-Version that is not 2 digits before classifying.
    for sv in ("1", "123", "a1", "\u0661\u0662"):
        code, out, _ = run(capsys, "check", "35693803564380", "--sv", sv, "--json")
        report = json.loads(out)
        assert code == 0 and report["result_code"] == 5004, sv
        assert report["equipment_status"] is None and report["result_avp"] == "Result-Code"
    code, out, _ = run(capsys, "check", "35693803564380", "--sv", "1")
    assert "Result-Code 5004 DIAMETER_INVALID_AVP_VALUE, no Equipment-Status" in out
    assert "Equipment-Status BLACKLISTED" not in out


@pytest.mark.parametrize("imsi", ["1234", "1234567890123456", "00101000000000x", "", "+0010100"])
def test_check_imsi_must_be_5_to_15_digits(capsys: pytest.CaptureFixture[str], imsi: str) -> None:
    code, out, err = run(capsys, "check", "35693803564380", "--imsi", imsi)
    assert code == 2 and out == "" and "--imsi" in err and "5 to 15 decimal digits" in err


def test_check_imsi_bounds_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    for imsi in ("00101", "001010000000001"):
        code, _, _ = run(capsys, "check", "35693803564380", "--imsi", imsi)
        assert code == 0


def test_check_5422_is_an_experimental_result(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIR_POLICY_UNKNOWN_EQUIPMENT", "tac_unknown")
    code, out, _ = run(capsys, "check", "99999999000000")
    assert code == 0
    assert "Answer      Experimental-Result-Code 5422" in out and "Result-Code 5422" not in (
        out.replace("Experimental-Result-Code 5422", ""))
    code, out, _ = run(capsys, "check", "99999999000000", "--json")
    report = json.loads(out)
    assert report["result_code"] == 5422 and report["result_avp"] == "Experimental-Result-Code"


def test_check_evaluates_clone_detection_from_the_observation_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    imei, imsi = "35209900123456", "001010000000001"  # clean in the default config
    code, out, _ = run(capsys, "check", imei, "--imsi", imsi, "--json")
    assert json.loads(out)["clone_detection"] == "disabled"
    monkeypatch.setenv("EIR_CLONE_DETECTION_ENABLED", "true")
    monkeypatch.setenv("EIR_CLONE_DETECTION_THRESHOLD", "1")
    code, out, _ = run(capsys, "check", imei, "--json")
    assert json.loads(out)["clone_detection"] is None  # no IMSI: nothing to evaluate
    code, out, _ = run(capsys, "check", imei, "--imsi", imsi, "--json")
    report = json.loads(out)
    assert "evaluated against the observation log" in report["clone_detection"]
    assert report["decided_by"] == "clean"  # nothing in the log yet
    # The gateway saw another IMSI with this IMEI a minute ago: the check sees it too.
    log = ObservationLog(tmp_path / "var" / "observations.sqlite")
    log.start()
    log.record(imei, "001010000000002", now=time.time() - 60)
    log.close()
    code, out, _ = run(capsys, "check", imei, "--imsi", imsi, "--json")
    assert code == 0 and json.loads(out)["decided_by"] == "clone_suspected"
    code, out, _ = run(capsys, "check", imei, "--imsi", imsi)
    assert [line for line in out.splitlines() if line.startswith("Clones")] == [
        "Clones      evaluated against the observation log (IMSIs the gateway saw with this IMEI"
        " within the window, as last written)"
    ]
    monkeypatch.setenv("EIR_OBSERVATIONS_ENABLED", "false")
    code, out, _ = run(capsys, "check", imei, "--imsi", imsi, "--json")
    assert json.loads(out)["clone_detection"].startswith("not evaluated: observations are off")


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


# --- `run` start-up failures: one line, no traceback, a meaningful exit status ----------------

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def cli(*argv: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EIR_")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "gateway.cli", *argv], capture_output=True, text=True, env=full_env,
        cwd=cwd, timeout=30,
    )


LOOPBACK = {"EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:0", "EIR_METRICS_LISTEN": "127.0.0.1:0",
            "EIR_N5G_EIR_LISTEN": "http://127.0.0.1:0"}


def start_fails(tmp_path: Path, toml: str, files: dict[str, str],
                env: dict[str, str] | None = None) -> tuple[int, str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = tmp_path / "gw.toml"
    config.write_text(toml)
    done = cli("run", "--config", str(config), env={**LOOPBACK, **(env or {})}, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("eir-gateway: ")]
    assert len(lines) == 1, done.stderr
    return done.returncode, lines[0]


@pytest.mark.parametrize(
    ("toml", "files", "expected"),
    [
        ('[tac]\nfile = "tac.txt"\n', {"tac.txt": "bad|line\n"}, "tac.txt:1: "),
        ('[lists]\nimport_files = ["l.csv"]\n',
         {"l.csv": "list,kind,value,imsi,reason\nblack,imei,123,,x\n"}, "l.csv: row 2: "),
        ('[registry]\nbackend = "local"\nseed_files = ["s.json"]\n', {"s.json": "{broken"},
         "s.json: line 1: invalid JSON"),
    ],
)
def test_run_bad_input_file_exit_2(tmp_path: Path, toml: str, files: dict[str, str],
                                   expected: str) -> None:
    code, line = start_fails(tmp_path, toml, files)
    assert code == 2 and "bad input file" in line and expected in line


def test_run_corrupt_database_names_it(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "lists.sqlite").write_text("garbage " * 100)
    code, line = start_fails(tmp_path, "", {})
    assert code == 2
    assert "lists.database" in line and str(Path("var") / "lists.sqlite") in line
    assert "not a database" in line


def test_run_state_directory_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where the directory should be
    code, line = start_fails(tmp_path, "", {}, {"EIR_STATE_DIRECTORY": str(tmp_path / "file")})
    assert code == 1
    assert "environment variable EIR_STATE_DIRECTORY (state.directory)" in line


def test_run_empty_listen_is_a_configuration_error(tmp_path: Path) -> None:
    code, line = start_fails(tmp_path, "", {}, {"EIR_DIAMETER_LISTEN": ""})
    assert code == 2 and "EIR_DIAMETER_LISTEN (diameter.listen)" in line


def test_run_address_in_use_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, line = start_fails(tmp_path, "", {},
                                 {"EIR_DIAMETER_LISTEN": f"tcp://127.0.0.1:{port}"})
    assert code == 1 and line.startswith("eir-gateway: cannot start: ")


@pytest.mark.skipif(sctp_unavailable() is None, reason="the kernel opens SCTP sockets here")
def test_run_without_sctp_exit_1(tmp_path: Path) -> None:
    code, line = start_fails(tmp_path, "", {}, {"EIR_DIAMETER_LISTEN": "sctp://127.0.0.1:0"})
    assert code == 1 and "cannot listen on SCTP" in line


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIR_")}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [PYTHON, "-m", "gateway.cli", "check", "--json", "35693803564380"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first write (`| head -0`)
    err = process.stderr.read().decode()
    assert process.wait(timeout=30) == 141
    assert err == ""


def test_registry_serve_from_any_directory_logs_sigterm(tmp_path: Path) -> None:
    # The default seed sits next to the embedded config, not in the current directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EIR_")}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [PYTHON, "-m", "gateway.cli", "registry", "serve", "--port", "0",
         "--database", str(tmp_path / "registry.sqlite")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    assert process.stderr is not None
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("registry serving") or "Traceback" in line:
                break
        assert seen and seen[-1].startswith("registry serving"), "".join(seen)
        assert any(line.startswith("imported ") for line in seen), "".join(seen)
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "registry stopping (SIGTERM)" in rest and "registry stopped" in rest


def test_run_tls_error_at_bind_names_the_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A key the configuration could not check (passphrase-protected) fails only when the
    # listener loads it; ssl's message names no file.
    import ssl

    import gateway.cli.run as run_module

    class FailingGateway:
        def __init__(self, config: object) -> None:
            pass

        async def serve(self) -> None:
            raise ssl.SSLError(9, "[SSL] PEM lib (_ssl.c:3905)")

    monkeypatch.setattr(run_module, "Gateway", FailingGateway)
    monkeypatch.setattr(run_module.logs, "configure", lambda *args: None)
    code, _, err = run(capsys, "run")
    assert code == 2
    assert "diameter.tls_cert" in err and "diameter.tls_key" in err and "PEM lib" in err
