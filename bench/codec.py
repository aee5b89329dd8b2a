"""Codec benchmark: one ME-Identity-Check exchange as the EIR server does it, ours vs scapy.

Method. One exchange is what the gateway does for every request between the framer and the socket:

* ours: ``decode_message`` of a typical ECR (Session-Id, Vendor-Specific-Application-Id,
  Auth-Session-State, Origin-Host/-Realm, Destination-Realm, Terminal-Information {IMEI,
  Software-Version}, User-Name, Proxy-Info), ``check_request`` against the ECR grammar (RFC 6733
  result codes), reading IMEI / Software-Version / User-Name, then the ECA (Result-Code 2001 +
  Equipment-Status) built the fast way: a pre-encoded constant block (Vendor-Specific-Application-Id,
  Auth-Session-State, Origin-Host, Origin-Realm) plus the per-request Session-Id, Result-Code,
  Equipment-Status and Proxy-Info, joined by ``encode_message``.
* scapy (reference, same run): ``DiamG(bytes)`` dissection of the same ECR, reading the same
  values, and the same ECA built from scapy AVP objects and serialised with ``bytes()``.

Both answers are checked to be byte-identical before timing. Each side runs ``--rounds`` rounds of
at most ``--count`` exchanges and at most ``--seconds`` seconds; the best round is reported (the
least disturbed by other processes), with the median alongside.

Run: ``.venv/bin/python bench/codec.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from diameter.codec import Avp, Message, decode_message, encode_avp, encode_message
from diameter.dictionary import DICTIONARY
from diameter.validate import check_request

S13 = 16777252
TGPP = 10415
EIR_HOST = "eir.example.net"
REALM = "example.net"
TARGET_US = 25.0

# Codes (RFC 6733 §4.5, TS 29.272 §7.3.1)
SESSION_ID, RESULT_CODE, PROXY_INFO, USER_NAME = 263, 268, 284, 1
TERMINAL_INFORMATION, IMEI, SOFTWARE_VERSION, EQUIPMENT_STATUS = 1401, 1402, 1403, 1445


def typical_ecr() -> bytes:
    """A typical ECR as an MME sends it through one Diameter agent (one Proxy-Info)."""
    a = Avp.new
    return Message(
        324,
        S13,
        0xC0,
        0x1234,
        0x5678,
        [
            a("Session-Id", "mme.example.net;1700000000;42"),
            a(
                "Vendor-Specific-Application-Id",
                [a("Vendor-Id", TGPP), a("Auth-Application-Id", S13)],
            ),
            a("Auth-Session-State", 1),
            a("Origin-Host", "mme.example.net"),
            a("Origin-Realm", REALM),
            a("Destination-Realm", REALM),
            a("Terminal-Information", [a("IMEI", "35395803121326"), a("Software-Version", "14")]),
            a("User-Name", "001010123456789"),
            a("Proxy-Info", [a("Proxy-Host", "dra.example.net"), a("Proxy-State", b"\x01\x02ps")]),
        ],
    ).encode()


# -- ours ---------------------------------------------------------------------------------------

ECR_COMMAND = DICTIONARY.command(S13, 324)
assert ECR_COMMAND is not None
# Constant part of every ECA (TS 29.272 §7.2.20), encoded once.
CONSTANT_BLOCK = b"".join(
    a.encode()
    for a in (
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13)],
        ),
        Avp.new("Auth-Session-State", 1),
        Avp.new("Origin-Host", EIR_HOST),
        Avp.new("Origin-Realm", REALM),
    )
)


def ours(data: bytes) -> bytes:
    request = decode_message(data)
    problem = check_request(request, ECR_COMMAND)  # type: ignore[arg-type]
    if problem is not None:
        raise RuntimeError(problem)
    terminal = request.find(TERMINAL_INFORMATION, TGPP)
    assert terminal is not None
    imei = terminal.find(IMEI, TGPP)
    sv = terminal.find(SOFTWARE_VERSION, TGPP)
    user = request.find(USER_NAME)
    _values = (
        imei.value if imei else None,
        sv.value if sv else None,
        user.value if user else None,
    )
    status = 0  # the classification result would go here
    session = request.avps[0]  # check_request guarantees Session-Id first
    body = [session.encode(), CONSTANT_BLOCK]
    body.append(encode_avp(RESULT_CODE, 0x40, 0, (2001).to_bytes(4, "big")))
    body.append(encode_avp(EQUIPMENT_STATUS, 0xC0, TGPP, status.to_bytes(4, "big")))
    body.extend(p.encode() for p in request.avps if p.code == PROXY_INFO and not p.vendor)
    return encode_message(
        request.flags & 0x40,
        324,
        S13,
        request.hop_by_hop,
        request.end_to_end,
        b"".join(body),
    )


# -- scapy --------------------------------------------------------------------------------------


def make_scapy() -> Callable[[bytes], bytes]:
    import logging

    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.contrib.diameter import AVP, DiamG

    def scapy_exchange(data: bytes) -> bytes:
        request = DiamG(data)
        session = proxy_infos = terminal = user = None
        proxy_infos = []
        for avp in request.avpList:
            code = avp.avpCode
            if code == SESSION_ID:
                session = avp.val
            elif code == PROXY_INFO:
                proxy_infos.append(avp)
            elif code == TERMINAL_INFORMATION:
                terminal = avp
            elif code == USER_NAME:
                user = avp.val
        imei = sv = None
        if terminal is not None:
            for child in terminal.val:
                if child.avpCode == IMEI:
                    imei = child.val
                elif child.avpCode == SOFTWARE_VERSION:
                    sv = child.val
        _values = (imei, sv, user)
        answer = DiamG(
            version=1,
            drFlags=request.drFlags & 0x40,
            drCode=324,
            drAppId=S13,
            drHbHId=request.drHbHId,
            drEtEId=request.drEtEId,
            avpList=[
                AVP(SESSION_ID, val=session),
                AVP(
                    260,
                    val=[AVP(266, val=TGPP), AVP(258, val=S13)],
                ),
                AVP(277, val=1),
                AVP(264, val=EIR_HOST),
                AVP(296, val=REALM),
                AVP(RESULT_CODE, val=2001),
                AVP([EQUIPMENT_STATUS, TGPP], val=0),
                *proxy_infos,
            ],
        )
        return bytes(answer)

    return scapy_exchange


# -- timing -------------------------------------------------------------------------------------


def measure(
    fn: Callable[[bytes], bytes], data: bytes, rounds: int, count: int, seconds: float
) -> dict[str, Any]:
    for _ in range(min(count, 200)):  # warm-up
        fn(data)
    rates = []
    total = 0
    for _ in range(rounds):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        now = start
        while n < count and now < deadline:
            for _ in range(50):
                fn(data)
            n += 50
            now = time.perf_counter()
        rates.append(n / (now - start))
        total += n
    best = max(rates)
    return {
        "exchanges": total,
        "rounds": rounds,
        "exchanges_per_second": round(best),
        "median_exchanges_per_second": round(statistics.median(rates)),
        "microseconds_per_exchange": round(1e6 / best, 2),
    }


def machine() -> str:
    """CPU model and core count (Linux /proc/cpuinfo when available)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=50_000, help="max exchanges per round")
    parser.add_argument("--seconds", type=float, default=3.0, help="max seconds per side")
    parser.add_argument("--no-scapy", action="store_true", help="skip the scapy reference")
    args = parser.parse_args(argv)

    data = typical_ecr()
    expected = ours(data)
    results: dict[str, Any] = {
        "benchmark": "ECR decode + check_request + ECA encode",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": machine(),
        "platform": platform.platform(),
        "request_octets": len(data),
        "answer_octets": len(expected),
        "target_microseconds": TARGET_US,
        "ours": measure(ours, data, args.rounds, args.count, args.seconds),
    }
    if not args.no_scapy:
        scapy_exchange = make_scapy()
        if scapy_exchange(data) != expected:
            print("scapy's answer differs from ours", file=sys.stderr)
            return 1
        results["scapy"] = measure(
            scapy_exchange, data, args.rounds, max(1, args.count // 20), args.seconds
        )
        results["speedup_vs_scapy"] = round(
            results["ours"]["exchanges_per_second"] / results["scapy"]["exchanges_per_second"], 1
        )
    results["within_target"] = results["ours"]["microseconds_per_exchange"] <= TARGET_US

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['benchmark']}  (Python {results['python']}, {results['platform']})")
    print(f"machine: {results['machine']}")
    print(
        f"request {len(data)} octets, answer {len(expected)} octets; best of {args.rounds} rounds"
    )
    for side in ("ours", "scapy"):
        if side in results:
            r = results[side]
            print(
                f"  {side:6s} {r['exchanges_per_second']:>9,} exchanges/s  "
                f"{r['microseconds_per_exchange']:>8.2f} us/exchange  "
                f"(median {r['median_exchanges_per_second']:,}/s, {r['exchanges']:,} exchanges)"
            )
    if "speedup_vs_scapy" in results:
        print(f"  ratio  ours/scapy = {results['speedup_vs_scapy']}x")
    verdict = "within" if results["within_target"] else "OVER"
    print(f"  target {TARGET_US} us per exchange: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
