"""`eir-gateway simulate`: simulated MMEs sending ME-Identity-Check-Requests (TS 29.272 §5.3.2.2),
or with ``--interface n5g-eir`` simulated AMFs sending GetEquipmentStatus (TS 29.511 §5.2.2.2).

    eir-gateway simulate [--interface s13|n5g-eir] [--host H] [--port P]
        [--transport tcp|sctp|tls] [--connections N]
        [--window W | --rate R] [--count N] [--duration S] [--max-duration S] [--timeout S]
        [--imei-file FILE | --mix valid=70,bad_check_digit=5,... --imsi --sv NN --seed N]
        [--origin-host PATTERN] [--origin-realm R] [--destination-realm R]
        [--destination-host H] [--pcap FILE] [--json] [--no-verify] [--config FILE]

Closed loop (default, ``--window`` outstanding requests per connection) measures capacity;
``--rate`` switches to the open loop (requests scheduled at that rate over all connections,
latency from the scheduled send time). The run stops after ``--count`` requests or
``--duration`` seconds (at least one of them; default ``--count 1000``) and always by
``--max-duration``. Without ``--imei-file`` the IMEIs come from a generator that derives valid,
listed and unknown-TAC IMEIs from the gateway configuration (``--config``, default the embedded
one) and knows what that configuration answers; every answer is verified unless
``--no-verify``. Exit status: 0 when every request was answered as expected and matched its
request, 1 otherwise, 2 on usage or configuration errors, 3 when the EIR ended the run early
(it sent DPR or closed a connection; the report says which and why).

N5g-eir: each connection is an AMF's HTTP/2 connection, h2c with prior knowledge (``--transport
tcp``, default port 8080) or TLS with ALPN h2 (``tls``, default port 443); each check becomes a
PEI (``imei-``/``imeisv-``) with a SUPI ``imsi-`` when it has an IMSI
(gateway/simulator/amf.py). The generator leaves malformed IMEIs out unless ``--mix`` names them
(no PEI carries one: the 5G-EIR answers 400).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway import aio
from gateway.cli._common import EXIT_CUT_SHORT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from gateway.config import ConfigError, load_config
from gateway.simulator.pcap import write_pcap
from gateway.simulator.runner import SimulatorSettings, simulate
from gateway.simulator.settings import INTERFACES, N5G_EIR, S13
from gateway.simulator.traffic import (
    CATEGORIES,
    DEFAULT_MIX,
    Check,
    GatewayData,
    ImeiFileError,
    ImeiGenerator,
    parse_mix,
    read_imei_file,
)

IMEI_FILE_HELP = """\
IMEI file (--imei-file): one check per line, IMEI [IMSI [SV [EXPECTED]]], separated by commas
(CSV) or whitespace; '#' comments, blank lines and an 'imei,...' header line are skipped; an
empty CSV field or '-' leaves a column out. IMEI: sent as it is (malformed ones on purpose too);
IMSI: 5-15 digits (User-Name); SV: 2 digits (Software-Version); EXPECTED: WHITELISTED,
BLACKLISTED, GREYLISTED (or 0/1/2) or EQUIPMENT_UNKNOWN (5422). A bad line stops the run with
its file and line number.

Examples:
  eir-gateway simulate --count 10000 --window 64 --connections 4
  eir-gateway simulate --rate 5000 --duration 10 --imsi --pcap run.pcap
  eir-gateway simulate --imei-file checks.csv --json
  eir-gateway simulate --interface n5g-eir --imsi --sv 01 --connections 4 --window 32
  eir-gateway simulate --interface n5g-eir --transport tls --tls-ca ca.pem --rate 2000 \
      --duration 10 --imsi

N5g-eir: the IMEI column may also hold a PEI (imei-..., imeisv-..., mac-..., eui-...), sent as
it is.
"""

DEFAULT_COUNT = 1000
DEFAULT_POOL = 10_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulated MMEs (S13) or AMFs (N5g-eir): send checks and report",
        description="Act as one or more MMEs (CER/CEA, DWR/DWA, DPR/DPA) and send "
        "ME-Identity-Check-Requests, or with --interface n5g-eir as AMFs sending "
        "GetEquipmentStatus over HTTP/2, in a closed loop (--window) or at a fixed rate "
        "(--rate); verify every answer and report counts, result codes, statuses and latency.",
        epilog=IMEI_FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_argument_group("target")
    target.add_argument("--interface", choices=INTERFACES, default=S13,
                        help="s13: MMEs over Diameter (default); n5g-eir: AMFs over HTTP/2")
    target.add_argument("--host", default="127.0.0.1", help="EIR address (default 127.0.0.1)")
    target.add_argument("--port", type=int, default=None, help="default 3868 (5868 for tls); n5g-eir: 8080 (443 for tls)")
    target.add_argument("--transport", choices=("tcp", "sctp", "tls"), default="tcp",
                        help="n5g-eir: tcp is h2c (prior knowledge), tls is h2 (ALPN)")
    target.add_argument("--connections", type=int, default=1, metavar="N",
                        help="MME connections, one Origin-Host each, or AMF connections "
                        "(default 1)")
    target.add_argument("--origin-host", default="mme{n}.sim.local", metavar="PATTERN",
                        help="Origin-Host; {n} is the connection number (default mme{n}.sim.local)")
    target.add_argument("--origin-realm", default="sim.local")
    target.add_argument("--destination-realm", default=None,
                        help="default: the gateway configuration's origin_realm")
    target.add_argument("--destination-host", default=None)
    target.add_argument("--tls-ca", help="CA bundle verifying the EIR's certificate")
    target.add_argument("--tls-cert", help="client certificate (PEM)")
    target.add_argument("--tls-key", help="client private key (PEM)")
    target.add_argument("--tls-server-name", help="name checked in the EIR's certificate")
    target.add_argument("--tls-insecure", action="store_true",
                        help="do not check the certificate's host name")

    load = parser.add_argument_group("load")
    load.add_argument("--window", type=int, default=None, metavar="W",
                      help="closed loop: outstanding requests per connection (default 16)")
    load.add_argument("--rate", type=float, default=None, metavar="R",
                      help="open loop: requests per second over all connections")
    load.add_argument("--spin-ms", type=float, default=2.0, metavar="MS",
                      help="open loop: busy-wait this close to each send, for sends on time "
                      "(default 2: above 500/s a core kept busy); 0: sleep on the event loop's "
                      "timer and send what is due in each tick (about 1 ms), to share a core "
                      "with another load generator")
    load.add_argument("--count", type=int, default=None, metavar="N",
                      help=f"requests to send (default {DEFAULT_COUNT} without --duration)")
    load.add_argument("--duration", type=float, default=None, metavar="S",
                      help="seconds of sending")
    load.add_argument("--max-duration", type=float, default=300.0, metavar="S",
                      help="hard stop in seconds (default 300)")
    load.add_argument("--doic", action="store_true",
                      help="act as an RFC 7683 reacting node: send OC-Supported-Features and "
                      "abate requests as the EIR's OC-OLR asks (loss algorithm; counted as "
                      "throttled)")
    load.add_argument("--timeout", type=float, default=5.0, metavar="S",
                      help="answer timeout per request (default 5)")

    imeis = parser.add_argument_group("IMEIs")
    imeis.add_argument("--imei-file", metavar="FILE",
                       help="one check per line: IMEI [IMSI [SV [EXPECTED]]], CSV or whitespace")
    imeis.add_argument("--mix", default=None, metavar="CAT=W,...",
                       help=f"generator weights over {', '.join(CATEGORIES)} "
                       "(default valid=70,bad_check_digit=5,malformed=5,unknown_tac=10,listed=10)")
    imeis.add_argument("--imsi", action="store_true", help="generator: add a User-Name (IMSI)")
    imeis.add_argument("--sv", metavar="NN", help="generator: Software-Version to send")
    imeis.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    imeis.add_argument("--pool", type=int, default=DEFAULT_POOL, metavar="N",
                       help=f"generator: distinct checks, sent in turn (default {DEFAULT_POOL})")
    imeis.add_argument("--no-verify", action="store_true",
                       help="do not compare answers with expected statuses")
    imeis.add_argument("--config", metavar="FILE",
                       help="the gateway's TOML (generator data and policy; default embedded)")

    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--pcap", metavar="FILE", help="write the exchanged messages as pcap")
    output.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="live progress on stderr (auto: when stderr is a terminal)")
    parser.set_defaults(func=run)


def _checks(args: argparse.Namespace, count: int | None) -> tuple[list[Check], str]:
    """The checks to send and the destination realm the configuration serves."""
    config = load_config(args.config)
    realm = config.peer.identity.origin_realm
    if args.imei_file:
        return read_imei_file(args.imei_file), realm
    if args.sv is not None and not (len(args.sv) == 2 and args.sv.isdigit()):
        raise ValueError(f"--sv {args.sv!r} is not 2 digits")
    mix = parse_mix(args.mix) if args.mix else None
    if mix is None and args.interface == N5G_EIR:
        mix = {**DEFAULT_MIX, "malformed": 0}  # no PEI carries a malformed IMEI
    generator = ImeiGenerator(
        GatewayData.from_config(config), config.policy, mix, imsi=args.imsi, sv=args.sv,
        seed=args.seed,
    )
    pool = max(1, min(args.pool, count)) if count is not None else max(1, args.pool)
    return generator.take(pool), realm


def settings_from_args(args: argparse.Namespace, realm: str) -> SimulatorSettings:
    if args.window is not None and args.rate is not None:
        raise ValueError("--window (closed loop) and --rate (open loop) exclude each other")
    count = args.count
    if count is None and args.duration is None:
        count = DEFAULT_COUNT
    tls = args.transport == "tls"
    if args.port is not None:
        port = args.port
    elif args.interface == N5G_EIR:
        port = 443 if tls else 8080
    else:
        port = 5868 if tls else 3868
    progress = {"on": True, "off": False}.get(args.progress, sys.stderr.isatty())
    settings = SimulatorSettings(
        host=args.host,
        port=port,
        interface=args.interface,
        transport=args.transport,
        connections=args.connections,
        origin_host=args.origin_host,
        origin_realm=args.origin_realm,
        destination_realm=args.destination_realm or realm,
        destination_host=args.destination_host,
        mode="open" if args.rate is not None else "closed",
        window=args.window if args.window is not None else 16,
        rate=args.rate if args.rate is not None else 1000.0,
        spin=args.spin_ms / 1000.0,
        count=count,
        duration=args.duration,
        max_duration=args.max_duration,
        timeout=args.timeout,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
        tls_verify=not args.tls_insecure,
        verify=not args.no_verify,
        progress=progress,
        doic=args.doic,
        capture=bool(args.pcap),
    )
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        checks, realm = _checks(args, args.count)
        settings = settings_from_args(args, realm)
    except (ConfigError, ImeiFileError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except ValueError as exc:
        return fail(f"simulate: {exc}", EXIT_USAGE)
    try:
        report, captures = aio.run(simulate(settings, checks))
    except (OSError, TimeoutError) as exc:
        return fail(f"simulate: cannot connect to {settings.host}:{settings.port}: {exc}")
    except Exception as exc:  # a refused CER (ClientClosed), TLS failure: report, exit 1
        return fail(f"simulate: {type(exc).__name__}: {exc}")
    if args.pcap:
        try:
            frames = write_pcap(args.pcap, captures)
        except OSError as exc:
            return fail(f"simulate: cannot write {args.pcap}: {exc}")
        if not args.json:
            print(f"pcap: {frames} frames written to {args.pcap}", file=sys.stderr)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.render_text())
    if report.cut_short:
        return EXIT_CUT_SHORT
    return EXIT_OK if report.ok else EXIT_FAILED
