"""The simulator against the real gateway (embedded default config, loopback, port 0)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from scapy.contrib.diameter import DiamG
from scapy.utils import rdpcap

from gateway.config import load_config
from gateway.service import Gateway
from gateway.simulator.pcap import write_pcap
from gateway.simulator.report import Report
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.traffic import Check, GatewayData, ImeiGenerator
from tests.simulator.conftest import gateway_config, port_of, running_gateway

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    # Overload control off: every answer is verified against the expected status, and a starved
    # test machine would have some answered 3004 (tests/simulator/test_doic.py covers that).
    config = gateway_config(tmp_path / "state", EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS="0")
    async for gw in running_gateway(config):
        yield gw


def _checks(n: int, seed: int = 1, imsi: bool = True) -> list[Check]:
    config = load_config()
    generator = ImeiGenerator(GatewayData.from_config(config), config.policy, seed=seed, imsi=imsi)
    return generator.take(n)


def _assert_consistent(report: Report, checks: list[Check]) -> None:
    """Counts add up, histograms match what was sent, percentiles are ordered."""
    d = report.to_dict()
    s = report.stats
    assert d["sent"] == d["answered"] + d["timed_out"] + d["lost"]
    assert sum(d["results"].values()) == d["answered"]
    assert sum(d["outcomes"].values()) == d["answered"]
    assert sum(d["latency_histogram"].values()) == d["answered"] == len(s.latencies)
    sent = [checks[i % len(checks)] for i in range(d["sent"])]
    expected = Counter(c.expected for c in sent)
    assert d["outcomes"] == dict(sorted(expected.items()))
    statuses = {k: v for k, v in expected.items() if k != "EQUIPMENT_UNKNOWN"}
    assert d["equipment_status"] == dict(sorted(statuses.items()))
    assert d["results"].get("2001", 0) == sum(statuses.values())
    assert d["categories"] == dict(sorted(Counter(c.category for c in sent).items()))
    lat = d["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert d["verification"]["verified"] == d["answered"]


@pytest.mark.parametrize(("connections", "window"), [(1, 1), (3, 16)])
async def test_closed_loop_every_answer_verified(
    gateway: Gateway, connections: int, window: int
) -> None:
    checks = _checks(300)
    settings = SimulatorSettings(
        port=port_of(gateway), connections=connections, window=window, count=600,
        max_duration=30.0,
    )
    report, captures = await simulate(settings, checks)
    assert captures == []
    assert report.ok, report.render_text()
    assert report.stats.sent == 600 and report.stats.answered == 600
    assert report.stats.mismatches == 0 and report.stats.id_mismatches == 0
    assert report.unmatched_answers == 0 and report.connections_up == connections
    # Expectations cover every category of the default mix, not only WHITELISTED.
    assert {"WHITELISTED", "BLACKLISTED", "GREYLISTED"} <= set(report.stats.outcomes)
    _assert_consistent(report, checks)


@pytest.mark.parametrize("spin", [0.002, 0.0], ids=["busy-wait", "timer"])
async def test_open_loop_rate_and_send_lag(gateway: Gateway, spin: float) -> None:
    checks = _checks(100, seed=2)
    settings = SimulatorSettings(
        port=port_of(gateway), mode="open", rate=400.0, count=200, connections=2,
        max_duration=30.0, spin=spin,
    )
    report, _ = await simulate(settings, checks)
    assert report.ok, report.render_text()
    _assert_consistent(report, checks)
    # 200 requests at 400/s take half a second of sending; latency from the scheduled time.
    assert 0.45 <= report.duration < 3.0
    assert len(report.stats.send_lag) == 200
    assert report.to_dict()["send_lag_ms"]["p50"] < 50.0


async def test_duration_bound_and_wrong_expectation_reported(gateway: Gateway) -> None:
    checks = [
        Check("35209900000000", expected="WHITELISTED"),
        # a clean IMEI announced as BLACKLISTED: every answer to it is a mismatch
        Check("35209900000000", expected="BLACKLISTED"),
    ]
    settings = SimulatorSettings(port=port_of(gateway), window=4, duration=0.3, max_duration=5.0)
    report, _ = await simulate(settings, checks)
    s = report.stats
    assert s.sent > 10 and s.answered == s.sent
    assert s.mismatches == s.sent // 2
    # One example for the one wrong check, however many times it was sent.
    assert s.mismatch_examples == [{
        "imei": "35209900000000", "expected": "BLACKLISTED", "got": "WHITELISTED",
        "count": s.mismatches,
    }]
    assert not report.ok
    assert 0.3 <= report.duration < 5.0


async def test_pcap_decodes_as_diameter(gateway: Gateway, tmp_path: Path) -> None:
    checks = _checks(40, seed=4)
    settings = SimulatorSettings(
        port=port_of(gateway), connections=2, window=8, count=40, capture=True,
        max_duration=30.0,
    )
    report, captures = await simulate(settings, checks)
    assert report.ok, report.render_text()
    path = tmp_path / "run.pcap"
    write_pcap(path, captures)
    # Per connection: CER, CEA, DPR, DPA, plus one MICR and one MICA per request.
    expected = 2 * 4 + 2 * 40
    packets = rdpcap(str(path))
    diameter = [p for p in packets if p.haslayer(DiamG)]
    assert len(diameter) == expected
    # (command code, R bit of the header flags, RFC 6733 §3)
    codes = Counter((p[DiamG].drCode, bool(int(p[DiamG].drFlags) & 0x80)) for p in diameter)
    assert codes[(324, True)] == 40 and codes[(324, False)] == 40
    assert codes[(257, True)] == codes[(257, False)] == 2
    assert codes[(282, True)] == codes[(282, False)] == 2

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed: the Wireshark decoding check needs it")
    fields = subprocess.run(
        [tshark, "-r", str(path), "-Y", "diameter", "-T", "fields", "-e", "diameter.cmd.code"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    assert len(fields) == expected
    assert Counter(fields)["324"] == 80
    expert = subprocess.run(
        [tshark, "-r", str(path), "-q", "-z", "expert"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "Malformed" not in expert and "Errors (" not in expert and "Warnings (" not in expert
    malformed = subprocess.run(
        [tshark, "-r", str(path), "-Y", "_ws.malformed || _ws.expert.severity >= 6291456"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert malformed.strip() == ""


async def test_cli_simulate_json(gateway: Gateway, tmp_path: Path) -> None:
    imei_file = tmp_path / "imeis.csv"
    imei_file.write_text(
        "imei,imsi,sv,expected\n"
        "35693803564380,,,BLACKLISTED\n"
        "352099001234562,001010000000002,01,\n"
        "12345,,,1\n",
        encoding="utf-8",
    )
    pcap = tmp_path / "cli.pcap"
    for extra, count in (([], 50), (["--imei-file", str(imei_file), "--pcap", str(pcap)], 9)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port_of(gateway)),
            "--count", str(count), "--json", "--connections", "2", "--window", "4", *extra,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["sent"] == report["answered"] == count
        assert report["ok"] and report["method"]["connections"] == 2
        assert report["verification"]["mismatches"] == 0
    assert report["verification"]["verified"] == 6  # 3 rows x 3 rounds, two with an expectation
    assert report["outcomes"]["BLACKLISTED"] == 6
    assert len(rdpcap(str(pcap))) > 2 * 9


async def test_cli_open_loop_sleeping_on_the_timer(gateway: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port_of(gateway)),
        "--rate", "500", "--count", "100", "--spin-ms", "0", "--json", "--imsi",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["method"]["mode"] == "open" and report["method"]["spin"] == 0.0
    assert report["sent"] == report["answered"] == 100 and report["ok"]


async def test_cli_bad_imei_file_names_the_line(tmp_path: Path) -> None:
    imei_file = tmp_path / "bad.txt"
    imei_file.write_text("35693803564380\n35693803564380 x\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", "--port", "1", "--imei-file",
        str(imei_file), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"{imei_file}:2:" in err.decode()


async def test_a_window_past_the_read_budget_is_refilled(gateway: Gateway) -> None:
    """The closed loop refills a window once the answers it read are handled; a read of more
    answers than the connection serves in one callback (diameter.read_budget_messages) is
    served over several, and each of them refills: the run neither stalls nor loses one."""
    checks = _checks(300, seed=9)
    settings = SimulatorSettings(port=port_of(gateway), connections=1, window=200, count=3_000,
                                 max_duration=60.0)
    report, _ = await simulate(settings, checks)
    assert report.ok, report.render_text()
    assert report.stats.answered == report.stats.verified == 3_000
    _assert_consistent(report, checks)
