"""GetEquipmentStatus (TS 29.511 §5.2.2.2): a parsed query -> the shared classifier -> response.

The same :class:`Classifier` (policy, monitor mode, lists, TAC database, registry, decision
cache, clone detection), observation log and metrics as S13: a PEI with an IMEI is classified
with the IMEI and Software-Version S13 would carry (``Pei.imei_and_sv``), the SUPI's IMSI as
S13's User-Name. Like the S13 handler, a check decided without waiting is answered without a
task, and one that waits for the shared clone count alone (Redis) is a
:class:`~diameter.deferred.DeferredAnswer` given from the count's callback, settled with the
other checks of its round trip (no future, no event loop callback per check); only a registry
wait makes it a coroutine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from functools import partial

from diameter.deferred import DeferredAnswer
from gateway.classify import Classifier, Decision, Pending
from gateway.events.bus import EventBus
from gateway.metrics import GatewayMetrics
from gateway.n5g_eir.identities import Pei
from gateway.n5g_eir.oauth2 import AccessTokenVerifier
from gateway.n5g_eir.problem import (
    EQUIPMENT_UNKNOWN,
    STATUS_RESPONSES,
    SYSTEM_FAILURE,
    Response,
    congestion,
    problem,
)
from gateway.n5g_eir.request import EquipmentStatusQuery, parse_request
from gateway.n5g_eir.settings import (
    EQUIPMENT_UNKNOWN as ANSWER_UNKNOWN,
)
from gateway.n5g_eir.settings import (
    REJECT,
    N5gEirSettings,
    OverloadSignal,
)
from gateway.observations import ObservationLog
from gateway.policy import REASON_LABEL, STATUS_LABEL, EquipmentStatus
from gateway.shared_count import SharedCount

INTERFACE = "n5g_eir"  # the `interface` label of eir_checks_total and eir_check_duration_seconds
NON_IMEI_REASON = "non_imei_pei"  # eir_checks_total reason of a mac-/eui- PEI

log = logging.getLogger("eir.n5g_eir")

class EquipmentIdentityCheck:
    """The 5G-EIR side of N5g-eir_EquipmentIdentityCheck."""

    def __init__(
        self,
        classifier: Classifier,
        settings: N5gEirSettings | None = None,
        metrics: GatewayMetrics | None = None,
        observations: ObservationLog | None = None,
        overload: OverloadSignal | None = None,
        mask_imsis: bool = True,
        verifier: AccessTokenVerifier | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.classifier = classifier
        self.events = events
        self.settings = settings = settings if settings is not None else N5gEirSettings()
        self.metrics = metrics
        self.observations = observations
        self.overload = overload
        self.mask_imsis = mask_imsis
        self.verifier = verifier
        self.in_flight = 0  # checks waiting for the registry, over all connections
        self._busy = congestion(503, settings.retry_after_seconds)
        self._connection_busy = congestion(429, settings.retry_after_seconds)

    def handle(
        self, method: bytes, path: bytes, connection_in_flight: int = 0,
        authorization: bytes | None = None,
    ) -> Response | Awaitable[Response] | DeferredAnswer:
        """One request. ``connection_in_flight``: checks of the same connection still waiting;
        ``authorization``: its Authorization field, checked when OAuth2 is on."""
        started = time.perf_counter()
        if self.verifier is not None:
            denied = self.verifier.check(authorization)
            if denied is not None:
                return denied
        settings = self.settings
        parsed = parse_request(method, path, settings.max_uri_bytes)
        if type(parsed) is not EquipmentStatusQuery:
            assert isinstance(parsed, Response)
            if parsed.status == 400:
                missing = parsed.cause == "MANDATORY_QUERY_PARAM_MISSING"
                self._count("rejected", "missing_imei" if missing else "invalid_request", started)
            return parsed
        # Overload first, and cheaply: no classification for a request that will be refused.
        if self.in_flight >= settings.max_in_flight:
            return self._busy
        if connection_in_flight >= settings.max_in_flight_per_connection:
            return self._connection_busy
        overload = self.overload
        if overload is not None:
            retry_after = overload.retry_after()
            if retry_after is not None:
                return congestion(503, retry_after)
        pei = parsed.pei
        if not pei.has_imei:
            return self._non_imei(parsed, started)
        imei, sv = pei.imei_and_sv
        imsi = None if parsed.supi is None else parsed.supi.imsi
        try:
            result = self.classifier.classify_sync(imei, imsi, sv)
        except Exception:
            return self._system_failure(started)
        if isinstance(result, Pending):
            count = result.clone_count
            if count is not None and self.classifier.counted(result):
                return self._when_counted(parsed, result, count, started)
            return self._resolve(parsed, result, started)
        return self._answer(parsed, result, started)

    def _when_counted(
        self, query: EquipmentStatusQuery, pending: Pending, count: SharedCount, started: float,
    ) -> DeferredAnswer:
        """Waiting for the shared clone count only: no task, coroutine or future per check;
        the count's callback gives the response (the checks of one round trip to Redis
        together). A plain DeferredAnswer and a partial: the compiled class cannot be extended
        here, in an interpreted module (gateway.s13's ``_CountedAnswer`` does)."""
        answer = DeferredAnswer()
        self.in_flight += 1
        count.add_callback(partial(self._counted, query, pending, started, answer))
        return answer

    def _counted(
        self, query: EquipmentStatusQuery, pending: Pending, started: float,
        answer: DeferredAnswer, n: int,
    ) -> None:
        self.in_flight -= 1
        if answer.settled:  # withdrawn: the connection went away
            return
        try:
            decision = self.classifier.decide_when_counted(pending, n)
            response = self._answer(query, decision, started)
        except Exception:
            # As on the other paths (gateway.s13's _CountedAnswer): never left unanswered.
            response = self._system_failure(started)
        answer.give(response)

    async def _resolve(
        self, query: EquipmentStatusQuery, pending: Pending, started: float
    ) -> Response:
        self.in_flight += 1
        try:
            decision = await self.classifier.resolve(pending)
        except Exception:
            return self._system_failure(started)
        finally:
            self.in_flight -= 1
        return self._answer(query, decision, started)

    def _answer(self, query: EquipmentStatusQuery, decision: Decision, started: float) -> Response:
        if self.events is not None:
            # Decision events (gateway/events): queued, never awaited; no Origin-Host on HTTP.
            # Before the observation is recorded: new_imsi asks the log what came before it.
            self.events.on_decision(decision, None, INTERFACE)
        imei = decision.imei
        if self.observations is not None and imei is not None and decision.imsi:
            self.observations.record(imei.body, decision.imsi)
        self._count(STATUS_LABEL[decision.enforcement], REASON_LABEL[decision.decisive], started)
        if log.isEnabledFor(logging.DEBUG):
            fields: dict[str, object] = {"pei": _pei_text(query.pei)}
            fields.update(decision.log_fields(self.mask_imsis))
            self._log(query, fields)
        return response_for(decision.status)

    def _non_imei(self, query: EquipmentStatusQuery, started: float) -> Response:
        """A mac-/eui- PEI: no IMEI to classify; ``n5g_eir.non_imei_pei`` says the answer."""
        monitor = self.classifier.policy.monitor_mode
        outcome = non_imei_outcome(self.settings.non_imei_pei, monitor)
        if outcome is None:
            self._count("rejected", "invalid_request", started)
            return NON_IMEI_REJECTED
        status, enforcement = outcome
        self._count(STATUS_LABEL[enforcement], NON_IMEI_REASON, started)
        if log.isEnabledFor(logging.DEBUG):
            self._log(query, {
                "pei": _pei_text(query.pei),
                "status": None if status is None else status.name,
                "enforcement": None if enforcement is None else enforcement.name,
                "monitor_mode": monitor,
                "decisive": NON_IMEI_REASON,
            })
        return response_for(status)

    def _system_failure(self, started: float) -> Response:
        # Never a status the check did not reach: 500 SYSTEM_FAILURE, as S13 answers 5012.
        log.exception("classification failed")
        self._count("unable_to_comply", "internal_error", started)
        return SYSTEM_FAILURE

    def _count(self, status: str, reason: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.count_check(status, reason, time.perf_counter() - started, INTERFACE)

    def _log(self, query: EquipmentStatusQuery, fields: dict[str, object]) -> None:
        """One structured line per decision (DESIGN.md §6); IMSI masked (logging.mask_imsi),
        GPSI always."""
        if query.gpsi is not None:
            fields["gpsi"] = query.gpsi.masked()  # always: it is the subscriber's number
        if query.supi is not None and query.supi.imsi is None:
            fields["supi_type"] = query.supi.type.value
        text = " ".join(
            f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in fields.items()
        )
        log.debug("check %s", text, extra={"fields": fields})


NON_IMEI_REJECTED = problem(
    400, "this 5G-EIR checks IMEI-based PEIs only", "MANDATORY_QUERY_PARAM_INCORRECT"
)


def response_for(status: EquipmentStatus | None) -> Response:
    """200 EirResponseData, or 404 ERROR_EQUIPMENT_UNKNOWN where S13 answers 5422."""
    return EQUIPMENT_UNKNOWN if status is None else STATUS_RESPONSES[status]


def non_imei_outcome(
    answer: str, monitor_mode: bool
) -> tuple[EquipmentStatus | None, EquipmentStatus | None] | None:
    """(status answered, enforcement) for a PEI without an IMEI under ``n5g_eir.non_imei_pei``
    = ``answer`` (None status: equipment unknown); None when such PEIs are rejected (400)."""
    if answer == REJECT:
        return None
    enforcement = None if answer == ANSWER_UNKNOWN else EquipmentStatus[answer]
    return (EquipmentStatus.WHITELISTED if monitor_mode else enforcement), enforcement


def _pei_text(pei: Pei) -> str:
    suffix = "-untrusted" if pei.untrusted else ""
    return f"{pei.type.value}-{pei.value}{suffix}"
