"""`eir-gateway check IMEI [--imsi IMSI] [--sv NN] [--config FILE] [--json]`.

Classifies one IMEI exactly as the S13 application would (same config, stores and policy) and
prints the answer with every reason behind it, the list entries matched and, when a registry is
configured, its verdict with origin and age. The registry is consulted even when an earlier
reason already decided, so the output shows everything known about the IMEI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway import registry_source
from gateway.classify import Classifier, Decision
from gateway.cli._common import EXIT_OK, EXIT_USAGE, add_config_argument, config_or_none, fail
from gateway.config import GatewayConfig
from gateway.observations import mask_imsi
from gateway.policy import EquipmentStatus


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("check", help="classify one IMEI and show why")
    parser.add_argument("imei", metavar="IMEI", help="14 or 15 digits (IMEI) or 16 (IMEISV)")
    parser.add_argument("--imsi", help="IMSI (User-Name) for IMEI+IMSI rules")
    parser.add_argument("--sv", metavar="NN", help="Software-Version (2 digits)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_or_none(args)
    if config is None:
        return EXIT_USAGE
    try:
        report = asyncio.run(_check(config, args.imei.strip(), args.imsi, args.sv))
    except Exception as exc:  # a store that cannot be opened or read: report, exit 1
        return fail(f"check failed: {exc}")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return EXIT_OK


async def _check(
    config: GatewayConfig, imei: str, imsi: str | None, sv: str | None
) -> dict[str, Any]:
    registry = registry_source.build(config.registry)
    classifier: Classifier | None = None
    try:
        classifier = Classifier.from_config(config, registry)
        decision = await classifier.classify(imei, imsi, sv, full=True)
        return decision_report(decision, classifier, config.logging.mask_imsi)
    finally:
        if registry is not None:
            await registry.close()
        if classifier is not None and classifier.lists.store is not None:
            classifier.lists.store.close()


def _status_name(status: EquipmentStatus | None) -> str:
    return "EQUIPMENT_UNKNOWN (5422)" if status is None else f"{status.name} ({status.value})"


def decision_report(decision: Decision, classifier: Classifier, mask: bool) -> dict[str, Any]:
    """A JSON-ready description of a decision (also the source of the text output)."""
    imei = decision.imei
    out: dict[str, Any] = {
        "input_valid": imei is not None,
        "imei": None,
        "imsi": (mask_imsi(decision.imsi) if mask else decision.imsi) or None,
        "result_code": decision.result_code,
        "answer": _status_name(decision.status),
        "equipment_status": None if decision.status is None else decision.status.name,
        "monitor_mode": decision.monitor_mode,
        "enforcement": _status_name(decision.enforcement),
        "decided_by": decision.decisive.value,
        "reasons": [{"reason": f.reason.value, "detail": f.detail} for f in decision.findings],
        "list_entries": [],
        "tac": None,
        "registry": None,
    }
    if imei is not None:
        out["imei"] = {
            "body": imei.body,
            "tac": imei.tac,
            "snr": imei.snr,
            "check_digit": imei.check_digit,
            "check_digit_received": imei.given_check_digit,
            "imei15": imei.imei15,
            "svn": imei.svn,
            "imeisv": imei.imeisv,
        }
        if classifier.tac is not None:
            info = classifier.tac.lookup(imei.tac)
            if info is not None:
                out["tac"] = {"manufacturer": info.manufacturer, "model": info.model}
    for match in decision.list_matches:
        e = classifier.lists.describe(match)
        out["list_entries"].append(
            {"list": e.colour.value, "kind": e.kind.value, "value": e.value,
             "imsi": (mask_imsi(e.imsi) if mask else e.imsi) or None, "reason": e.reason}
        )
    v = decision.registry
    if v is not None:
        out["registry"] = {
            "status": v.status.value,
            "manufacturer": v.manufacturer,
            "source": v.source,
            "origin": v.origin.value,
            "age_seconds": decision.registry_age,
            "reports": [
                {"type": r.type.value, "country": r.country, "since": r.since,
                 "withdrawn": r.withdrawn}
                for r in v.reports
            ],
        }
    elif classifier.registry is None:
        out["registry"] = "not configured"
    return out


def render_text(r: dict[str, Any]) -> str:
    lines: list[str] = []
    imei = r["imei"]
    if imei is None:
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
    answer = f"Result-Code {r['result_code']}"
    if r["equipment_status"] is not None:
        answer += f", Equipment-Status {r['answer']}"
    lines.append(f"Answer      {answer}")
    if r["monitor_mode"]:
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
    return "\n".join(lines) + "\n"
