"""What the gateway knows about one IMEI, as JSON-ready dicts: the decision and every reason
behind it (``eir-gateway check --json`` and ``GET /v1/checks/{imei}`` print the same), the TAC
record, the observation history and the clone-detection state. The CLI and the API share these,
so the two never disagree.

IMSIs are masked (MCC+MNC kept, :func:`gateway.observations.mask_imsi`) unless ``mask`` is
False: ``logging.mask_imsi`` for the CLI, the token's ``pii`` role for the API.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway import state
from gateway.classify import Classifier, Decision
from gateway.config import GatewayConfig
from gateway.imei import Imei, is_svn, parse_imei
from gateway.observations import mask_imsi
from gateway.policy import EquipmentStatus

if TYPE_CHECKING:
    from gateway.pg.database import Database

# 3GPP TS 23.003 §2.2: an IMSI is MCC (3) + MNC (2-3) + MSIN, at most 15 digits; 5 is the
# shortest the MCC+MNC masking in the output can keep.
IMSI_LENGTHS = range(5, 16)
INVALID_SV = 5004  # RFC 6733 §7.1.5 DIAMETER_INVALID_AVP_VALUE, as gateway/s13.py answers
EQUIPMENT_UNKNOWN = 5422  # TS 29.272 §7.4.3.1, an Experimental-Result-Code
CLONE_FROM_LOG = (
    "evaluated against the observation log (IMSIs the gateway saw with this IMEI within the"
    " window, as last written)"
)
CLONE_NO_LOG = (
    "not evaluated: observations are off, so the IMSIs seen per IMEI live only in the running"
    " gateway's memory"
)



def imsi_problem(imsi: str) -> str | None:
    """What is wrong with an IMSI given to a check, or None."""
    if len(imsi) in IMSI_LENGTHS and imsi.isascii() and imsi.isdigit():
        return None
    return f"{imsi!r}: an IMSI is 5 to 15 decimal digits (TS 23.003 §2.2)"


async def check_report(
    config: GatewayConfig, classifier: Classifier, imei: str, imsi: str | None, sv: str | None,
    mask: bool,
) -> dict[str, Any]:
    """The S13 answer to (IMEI, IMSI, Software-Version) with every reason: a diagnostic check
    (the registry is consulted even when an earlier reason decided; nothing is recorded)."""
    if sv is not None and not is_svn(sv):
        report = invalid_sv_report(imei, imsi, sv, config.policy.monitor_mode, mask)
    else:
        decision = await classifier.classify(imei, imsi, sv, full=True)
        report = decision_report(decision, classifier, mask)
    report["clone_detection"] = clone_note(config, imsi)
    return report


def clone_note(config: GatewayConfig, imsi: str | None) -> str | None:
    """The ``clone_detection`` field: None when it does not apply to this check."""
    if not config.clone_detection.enabled:
        return "disabled"
    if not imsi:
        return None
    return CLONE_FROM_LOG if config.observations.enabled else CLONE_NO_LOG


def invalid_sv_report(
    imei: str, imsi: str | None, sv: str, monitor_mode: bool, mask: bool
) -> dict[str, Any]:
    """The S13 answer to a Software-Version that is not 2 digits: 5004, no Equipment-Status."""
    detail = f"Software-Version {sv!r} is not 2 decimal digits"
    return {
        "input_valid": False,
        "imei": None,
        "imsi": (mask_imsi(imsi) if mask else imsi) or None,
        "result_code": INVALID_SV,
        "result_avp": "Result-Code",
        "answer": f"DIAMETER_INVALID_AVP_VALUE ({INVALID_SV})",
        "equipment_status": None,
        "monitor_mode": monitor_mode,
        "enforcement": None,
        "decided_by": "invalid_software_version",
        "reasons": [{"reason": "invalid_software_version", "detail": detail}],
        "list_entries": [],
        "tac": None,
        "registry": None,
    }


def status_name(status: EquipmentStatus | None) -> str:
    return "EQUIPMENT_UNKNOWN (5422)" if status is None else f"{status.name} ({status.value})"


def decision_report(decision: Decision, classifier: Classifier, mask: bool) -> dict[str, Any]:
    """A JSON-ready description of a decision (also the source of the text output)."""
    imei = decision.imei
    out: dict[str, Any] = {
        "input_valid": imei is not None,
        "imei": None,
        "imsi": (mask_imsi(decision.imsi) if mask else decision.imsi) or None,
        "result_code": decision.result_code,
        # 5422 travels in Experimental-Result (TS 29.272 §7.4.3.1), the rest in Result-Code.
        "result_avp": "Experimental-Result-Code"
        if decision.result_code == EQUIPMENT_UNKNOWN else "Result-Code",
        "answer": status_name(decision.status),
        "equipment_status": None if decision.status is None else decision.status.name,
        "monitor_mode": decision.monitor_mode,
        "enforcement": status_name(decision.enforcement),
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




def parse_body(text: str) -> Imei | None:
    """The IMEI of a query (14, 15 with a valid check digit, or 16 digits), else None."""
    parsed = parse_imei(text)
    if not isinstance(parsed, Imei) or not parsed.check_digit_ok:
        return None
    return parsed


def tac_report(classifier: Classifier, tac: str) -> dict[str, Any] | None:
    """The TAC database record of an 8-digit TAC, or None when it is not there."""
    if classifier.tac is None:
        return None
    info = classifier.tac.lookup(tac)
    if info is None:
        return None
    return {"tac": info.tac, "manufacturer": info.manufacturer, "model": info.model}


def observations_report(
    config: GatewayConfig, imei: Imei, mask: bool, db: Database | None = None
) -> dict[str, Any]:
    """The IMSIs seen with an IMEI (first, last seen, count) as last written to the log (read
    through ``db``, the process's PostgreSQL pool, when given). Blocking (the database): from
    asyncio, call in a thread."""
    rows = state.history(config, imei.body, db) if config.observations.enabled else []
    return {
        "imei": imei.body,
        "enabled": config.observations.enabled,
        "observations": [
            {"imsi": mask_imsi(imsi) if mask else imsi, "first_seen": _iso(first),
             "last_seen": _iso(last), "count": count}
            for imsi, first, last, count in rows
        ],
    }


def clone_report(
    config: GatewayConfig, classifier: Classifier, imei: Imei, mask: bool,
    now: float | None = None, db: Database | None = None,
) -> dict[str, Any]:
    """The IMSIs counted for an IMEI within the clone-detection window and whether it is
    suspected: those of the running gateway's tracker and those of the observation log as last
    written, together (under ``--workers N`` the log also holds what the other workers saw,
    which this process's tracker does not; read through ``db`` as in :func:`observations_report`).
    Blocking (the database): call in a thread."""
    cd = config.clone_detection
    now = time.time() if now is None else now
    seen: dict[str, float] = {}
    sources: list[str] = []
    if cd.enabled and classifier.clone is not None:
        seen = dict(classifier.clone.imsis(imei.body, now))
        if seen:
            sources.append("tracker")
    if cd.enabled and config.observations.enabled:
        horizon = now - cd.window
        logged = {imsi: last for imsi, _, last, _ in
                  state.history(config, imei.body, db) if last >= horizon}
        if logged or not sources:
            sources.append("observation log")
        for imsi, last in logged.items():
            seen[imsi] = max(last, seen.get(imsi, last))
    source = " and ".join(sources) or "tracker" if cd.enabled else "disabled"
    return {
        "imei": imei.body,
        "enabled": cd.enabled,
        "source": source,
        "threshold": cd.threshold,
        "window_seconds": cd.window,
        "distinct_imsis": len(seen),
        "suspected": cd.enabled and len(seen) > cd.threshold,
        "imsis": [{"imsi": mask_imsi(k) if mask else k, "last_seen": _iso(t)}
                  for k, t in sorted(seen.items(), key=lambda kv: kv[1])],
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
