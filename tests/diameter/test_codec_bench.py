"""bench/codec.py runs, and its two implementations produce the same answer octets."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from diameter.codec import decode_message
from diameter.dictionary import DICTIONARY
from diameter.validate import check_avps
from tests.bench_modules import load


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load("codec")


def test_bench_answer_is_a_valid_eca(bench: ModuleType) -> None:
    request = bench.typical_ecr()
    answer = decode_message(bench.ours(request))
    command = DICTIONARY.command(16777252, 324)
    assert command is not None
    assert check_avps(answer.avps, command.answer, DICTIONARY, ()) is None
    assert (answer.get("Result-Code"), answer.get("Equipment-Status")) == (2001, 0)
    assert answer.hop_by_hop == decode_message(request).hop_by_hop
    assert answer.avps[0].code == 263


def test_scapy_builds_the_same_answer(bench: ModuleType) -> None:
    pytest.importorskip("scapy.contrib.diameter")
    request = bench.typical_ecr()
    assert bench.make_scapy()(request) == bench.ours(request)


def test_bench_json_output(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--json", "--rounds", "1", "--count", "100", "--seconds", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ours"]["exchanges"] >= 100
    assert result["ours"]["microseconds_per_exchange"] > 0
    assert result["speedup_vs_scapy"] > 1
    assert result["python"].startswith("3.")
