"""`eir-gateway check IMEI [--imsi IMSI] [--sv NN] [--interface s13|n5g-eir] [--config FILE] [--json]`.

Classifies one IMEI exactly as the S13 application would (same config, stores and policy) and
prints the answer with every reason behind it, the list entries matched and, when a registry is
configured, its verdict with origin and age. The registry is consulted even when an earlier
reason already decided, so the output shows everything known about the IMEI.

Like the S13 application (gateway/s13.py), a Software-Version that is not 2 decimal digits is
answered 5004 DIAMETER_INVALID_AVP_VALUE before any classification. Clone detection counts the
IMSIs seen with an IMEI: like the gateway at start, the check reads them from the observation log
(as last written); with observations off they live only in the gateway's memory, and it says so.

``--interface n5g-eir`` takes a PEI (TS 29.571) instead: an ``imei-``/``imeisv-`` PEI is classified
with the IMEI and Software Version S13 would carry, and the output adds the N5g-eir answer (HTTP
status and body); a PEI without an IMEI, or not a PEI, gets the answer the service gives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway import registry_source
from gateway.classify import Classifier
from gateway.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    add_config_argument,
    config_or_none,
    database_problem,
    fail,
)
from gateway.config import GatewayConfig
from gateway.imei import is_svn
from gateway.n5g_eir.equipment_status import (
    NON_IMEI_REASON,
    NON_IMEI_REJECTED,
    non_imei_outcome,
    response_for,
)
from gateway.n5g_eir.identities import Invalid, Pei, parse_pei
from gateway.n5g_eir.problem import InvalidParam, Response, problem
from gateway.observations import mask_imsi
from gateway.policy import EquipmentStatus
from gateway.report import (
    CLONE_FROM_LOG,
    CLONE_NO_LOG,
    EQUIPMENT_UNKNOWN,
    INVALID_SV,
    check_report,
    clone_note,
    imsi_problem,
    invalid_sv_report,
    status_name,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("check", help="classify one IMEI and show why")
    parser.add_argument("imei", metavar="IMEI", help="14 or 15 digits (IMEI) or 16 (IMEISV); "
                        "with --interface n5g-eir a PEI: imei-..., imeisv-..., mac-..., eui-...")
    parser.add_argument("--imsi", help="IMSI (User-Name, 5-15 digits) for IMEI+IMSI rules")
    parser.add_argument("--sv", metavar="NN", help="Software-Version (2 digits)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--interface", choices=("s13", "n5g-eir"), default="s13",
        help="answer as S13 does (default) or as N5g-eir (TS 29.511) does; --imsi is then "
             "the SUPI imsi-...",
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    imsi = args.imsi
    if imsi is not None:
        imsi = imsi.strip()
        problem = imsi_problem(imsi)
        if problem is not None:
            return fail(f"--imsi {problem}", EXIT_USAGE)
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    problem = database_problem(config)
    if problem is not None:
        return fail(f"check failed: {problem}", EXIT_USAGE)
    if args.interface == "n5g-eir" and args.sv is not None:
        return fail("--sv: on N5g-eir the Software Version is part of an imeisv- PEI",
                    EXIT_USAGE)
    mask = config.logging.mask_imsi
    try:
        if args.interface == "n5g-eir":
            report = _check_pei(config, args.imei.strip(), imsi)
        elif args.sv is not None and not is_svn(args.sv):
            # Refused before any classification, as S13 does: no store needs opening.
            report = invalid_sv_report(args.imei.strip(), imsi, args.sv,
                                       config.policy.monitor_mode, mask)
        else:
            report = asyncio.run(_check(config, args.imei.strip(), imsi, args.sv, mask))
    except Exception as exc:  # a store that cannot be opened or read: report, exit 1
        return fail(f"check failed: {exc}")
    report["clone_detection"] = clone_note(config, imsi)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return EXIT_OK


async def _check(
    config: GatewayConfig, imei: str, imsi: str | None, sv: str | None, mask: bool
) -> dict[str, Any]:
    registry = registry_source.build(config.registry)
    classifier: Classifier | None = None
    try:
        classifier = Classifier.from_config(config, registry)
        return await check_report(config, classifier, imei, imsi, sv, mask)
    finally:
        if registry is not None:
            await registry.close()
        if classifier is not None and classifier.lists.store is not None:
            classifier.lists.store.close()


def _check_pei(config: GatewayConfig, text: str, imsi: str | None) -> dict[str, Any]:
    """The N5g-eir answer for a PEI: classified as S13 would with the PEI's IMEI and SVN."""
    pei = parse_pei(text)
    if isinstance(pei, Invalid) or not pei.has_imei:
        return pei_report(text, pei, imsi, config)
    imei, sv = pei.imei_and_sv
    report = asyncio.run(_check(config, imei, imsi, sv, config.logging.mask_imsi))
    status = report["equipment_status"]
    report["pei"] = text
    report["n5g_eir"] = http_answer(response_for(None if status is None else
                                                 EquipmentStatus[status]))
    return report


def http_answer(response: Response) -> dict[str, Any]:
    return {"status": response.status, "content_type": response.content_type.decode(),
            "body": json.loads(response.body)}


def pei_report(text: str, pei: Pei | Invalid, imsi: str | None,
               config: GatewayConfig) -> dict[str, Any]:
    """A PEI with no IMEI to classify (mac-, eui-: n5g_eir.non_imei_pei), or not a PEI (400)."""
    monitor = config.policy.monitor_mode
    if isinstance(pei, Invalid):
        response = problem(400, f"query pei: {pei.reason}", "MANDATORY_QUERY_PARAM_INCORRECT",
                           [InvalidParam("query pei", pei.reason)])
        status = enforcement = None
        decided_by, detail = "invalid_pei", pei.reason
    else:
        outcome = non_imei_outcome(config.n5g_eir.non_imei_pei, monitor)
        response = NON_IMEI_REJECTED if outcome is None else response_for(outcome[0])
        status, enforcement = outcome or (None, None)
        decided_by = NON_IMEI_REASON
        detail = f"{pei.type.value} PEI, no IMEI: n5g_eir.non_imei_pei = " \
                 f"{config.n5g_eir.non_imei_pei}"
    mask = config.logging.mask_imsi
    return {
        "input_valid": not isinstance(pei, Invalid),
        "pei": text,
        "imei": None,
        "imsi": (mask_imsi(imsi) if mask else imsi) or None,
        "result_code": None,
        "result_avp": None,
        "answer": None if status is None else status_name(status),
        "equipment_status": None if status is None else status.name,
        "monitor_mode": monitor,
        "enforcement": None if enforcement is None else status_name(enforcement),
        "decided_by": decided_by,
        "reasons": [{"reason": decided_by, "detail": detail}],
        "list_entries": [],
        "tac": None,
        "registry": None,
        "n5g_eir": http_answer(response),
    }


def render_text(r: dict[str, Any]) -> str:
    lines: list[str] = []
    imei = r["imei"]
    if r.get("pei"):
        lines.append(f"PEI         {r['pei']}")
    if r["decided_by"] in ("invalid_pei", NON_IMEI_REASON):
        lines.append("IMEI        none: not an S13 check")
    elif r["decided_by"] == "invalid_software_version":
        lines.append("IMEI        not examined: the request is refused first")
    elif imei is None:
        lines.append("IMEI        malformed")
    else:
        cd = imei["check_digit"]
        got = imei["check_digit_received"]
        cd_text = f"check digit {cd}" + ("" if got in (None, cd) else f", received {got}")
        lines.append(
            f"IMEI        {imei['body']} (TAC {imei['tac']}, SNR {imei['snr']}, {cd_text})"
        )
        lines.append(f"IMEISV      {imei['imeisv'] or '-'}")
        tac = r["tac"]
        known = f"{tac['manufacturer']} {tac['model']}" if tac else "not in the TAC database"
        lines.append(f"TAC         {known}")
    if r["imsi"]:
        lines.append(f"IMSI        {r['imsi']}")
    answer = f"{r.get('result_avp', 'Result-Code')} {r['result_code']}"
    if r["result_code"] is None:
        answer = "none on S13 (no IMEI)"
        if r["answer"] is not None:
            answer += f"; N5g-eir status {r['answer']}"
    elif r["equipment_status"] is not None:
        answer += f", Equipment-Status {r['answer']}"
    elif r["result_code"] == INVALID_SV:
        answer += " DIAMETER_INVALID_AVP_VALUE, no Equipment-Status"
    elif r["result_code"] == EQUIPMENT_UNKNOWN:
        answer += " DIAMETER_ERROR_EQUIPMENT_UNKNOWN"
    lines.append(f"Answer      {answer}")
    if r["monitor_mode"] and r["enforcement"] is not None:
        lines.append(f"            monitor mode: enforcement would answer {r['enforcement']}")
    lines.append(f"Decided by  {r['decided_by']}")
    lines.append("Reasons")
    for item in r["reasons"]:
        mark = "*" if item["reason"] == r["decided_by"] else "-"
        lines.append(f"  {mark} {item['reason']:<26} {item['detail']}".rstrip())
    for e in r["list_entries"]:
        pair = f" with IMSI {e['imsi']}" if e["imsi"] else ""
        lines.append(
            f"List        {e['list']} {e['kind']} {e['value']}{pair}: {e['reason'] or ''}"
        )
    reg = r["registry"]
    if isinstance(reg, dict):
        age = reg["age_seconds"]
        age_text = "" if age is None else f", {age:.1f} s old"
        lines.append(
            f"Registry    {reg['status']} (source {reg['source']}, from {reg['origin']}{age_text})"
        )
        for rep in reg["reports"]:
            state = " (withdrawn)" if rep["withdrawn"] else ""
            lines.append(
                f"            {rep['type']} in {rep['country']} since {rep['since']}{state}"
            )
    elif reg is not None:
        lines.append(f"Registry    {reg}")
    clone = r.get("clone_detection")
    if clone in (CLONE_FROM_LOG, CLONE_NO_LOG):
        lines.append(f"Clones      {clone}")
    http = r.get("n5g_eir")
    if http is not None:
        body = json.dumps(http["body"], separators=(",", ":"))
        lines.append(f"N5g-eir     HTTP {http['status']} {http['content_type']} {body}")
    return "\n".join(lines) + "\n"
