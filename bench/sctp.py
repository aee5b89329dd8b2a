"""SCTP vs TCP: MICR/s of the gateway over each transport, in one run, inside the SCTP guest.

Method.

* The kernel of the development machines has no SCTP: this script boots the guest of
  ``tests/sctp/vm`` (QEMU software emulation, Debian's kernel) and runs itself there with
  ``--in-guest``. The figures are emulated: only their ratio means something. It answers one
  question: does a MICR cost more over the SCTP transport than over TCP?
* In the guest, one process on uvloop (the loop ``eir-gateway run`` uses): the gateway on its
  embedded default configuration (overload control off: under emulation every request queues),
  listening on ``tcp://127.0.0.1:0`` and ``sctp://127.0.0.1:0``
  at once, and the simulator (gateway.simulator) as the MME. Client and server share the
  process, so each transport's cost is paid on both sides.
* IMEIs: the simulator's generator with its default mix, a pool of ``--pool`` checks sent in
  turn, each answer verified against the status the default configuration gives; each
  transport first gets the whole pool twice (warm-up: registry verdicts and decisions cached).
* Closed loop, ``--window`` outstanding requests on one connection, ``--seconds`` per round,
  ``--rounds`` rounds alternating TCP and SCTP so both see the same disturbances; the best
  round of each is shown, the medians alongside, and the ratio SCTP/TCP of the best rates.

Run: ``.venv/bin/python bench/sctp.py [--seconds S] [--rounds N] [--json]`` (needs what the SCTP
stage needs: qemu-system-x86 and ``tests/sctp/vm/build.sh --fetch``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    parser.add_argument("--in-guest", metavar="OUT", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- inside the guest ----------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.config import load_config
    from gateway.service import Gateway
    from gateway.simulator.runner import SimulatorSettings, simulate
    from gateway.simulator.traffic import GatewayData, ImeiGenerator

    state = Path("/tmp/bench-sctp-state")  # the guest's tmpfs: SQLite cannot use 9p
    env = {
        "EIR_DIAMETER_LISTEN": "tcp://127.0.0.1:0,sctp://127.0.0.1:0",
        "EIR_METRICS_LISTEN": "127.0.0.1:0",
        "EIR_N5G_EIR_LISTEN": "",  # S13 only: no N5g-eir listener to collide with
        "EIR_STATE_DIRECTORY": str(state),
        "EIR_LOGGING_LEVEL": "WARNING",
        # Emulated, everything queues: overload control would answer 3004 to part of the load.
        "EIR_DIAMETER_OVERLOAD_TARGET_DELAY_SECONDS": "0",
    }
    config = load_config(None, env=env)
    gateway = Gateway(config)
    await gateway.start()
    try:
        ports = {transport: port for transport, _, port in gateway.diameter_sockets}
        generator = ImeiGenerator(GatewayData.from_config(config), config.policy, seed=args.seed)
        checks = generator.take(args.pool)
        for transport, port in ports.items():
            warm = SimulatorSettings(
                port=port, transport=transport, window=64, count=2 * len(checks),
                max_duration=600.0, origin_host=f"warm.{transport}{{n}}.sim",
            )  # fmt: skip
            report, _ = await simulate(warm, checks)
            if not report.ok:
                raise RuntimeError(f"warm-up over {transport} failed: {report.render_text()}")
        rounds: dict[str, list[dict[str, float]]] = {t: [] for t in ports}
        for index in range(args.rounds):
            for transport, port in ports.items():
                settings = SimulatorSettings(
                    port=port, transport=transport, window=args.window, duration=args.seconds,
                    max_duration=args.seconds + 60, origin_host=f"r{index}.{transport}{{n}}.sim",
                )  # fmt: skip
                report, _ = await simulate(settings, checks)
                if not report.ok:
                    raise RuntimeError(f"{transport} round {index}: {report.render_text()}")
                latencies = sorted(report.stats.latencies)
                rounds[transport].append({
                    "rate": report.achieved_rate,
                    "answered": report.stats.answered,
                    "p50_ms": 1000 * latencies[len(latencies) // 2],
                    "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
                })  # fmt: skip
    finally:
        await gateway.stop()
    best = {t: max(r, key=lambda x: x["rate"]) for t, r in rounds.items()}
    return {
        "method": {
            "loop": "uvloop", "window": args.window, "connections": 1, "seconds": args.seconds,
            "rounds": args.rounds, "pool": args.pool, "python": sys.version.split()[0],
            "guest_kernel": platform.release(), "guest_cpus": os.cpu_count(),
        },
        "best": best,
        "median_rate": {t: statistics.median(x["rate"] for x in r) for t, r in rounds.items()},
        "sctp_over_tcp": best["sctp"]["rate"] / best["tcp"]["rate"],
        "rounds": rounds,
    }  # fmt: skip


def in_guest(args: argparse.Namespace) -> None:
    from gateway import aio

    result = aio.run(measure(args))
    Path(args.in_guest).write_text(json.dumps(result))


# -- on the host ---------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.in_guest:
        in_guest(args)
        return
    if shutil.which("qemu-system-x86_64") is None:
        sys.exit("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    vm = ROOT / "tests" / "sctp" / "vm"
    build = subprocess.run(["sh", str(vm / "build.sh")], capture_output=True, text=True)
    if build.returncode != 0:
        sys.exit(f"the SCTP guest cannot be built: {build.stderr.strip()}")
    work = ROOT / ".cache" / "bench-sctp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "result.json"
    command = (
        f"cd {ROOT} && PYTHONDONTWRITEBYTECODE=1 {sys.executable} bench/sctp.py "
        f"--seconds {args.seconds} --rounds {args.rounds} --window {args.window} "
        f"--pool {args.pool} --seed {args.seed} --in-guest {out} > {work}/output.txt 2>&1"
    )
    done = subprocess.run(["sh", str(vm / "run.sh"), str(work), command], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        output = (work / "output.txt").read_text() if (work / "output.txt").exists() else ""
        sys.exit(f"the guest run failed ({done.returncode}):\n{output[-4000:]}\n{done.stdout[-2000:]}")
    result = json.loads(out.read_text())
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["method"]
    print(f"SCTP vs TCP in the guest ({m['guest_kernel']}, {m['guest_cpus']} emulated CPUs, "
          f"Python {m['python']}, {m['loop']}), closed loop window {m['window']} x 1 connection, "
          f"{m['rounds']} rounds of {m['seconds']} s, best round shown:")
    for transport in ("tcp", "sctp"):
        best = result["best"][transport]
        print(f"  {transport:4} {best['rate']:9,.0f} MICR/s (median of rounds "
              f"{result['median_rate'][transport]:,.0f})  p50 {best['p50_ms']:.1f} ms  "
              f"p99 {best['p99_ms']:.1f} ms")
    print(f"  SCTP/TCP rate: {result['sctp_over_tcp']:.2f} (emulated machine: ratios only)")


if __name__ == "__main__":
    main()
