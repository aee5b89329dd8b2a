"""S13 ME-Identity-Check (TS 29.272 §5.3.2.2, §7.2.19/§7.2.20): MICR -> classification -> MICA.

Answers are assembled from pre-encoded constant blocks (one per outcome) plus the per-request
Session-Id, DRMP and Proxy-Info, so a cache-hit check costs one decode, one classification and a
few byte joins; it is answered without creating a task (STYLE.md item 7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, Final

from diameter import lane
from diameter.answer import answer_to
from diameter.application import Application, Lane
from diameter.codec import FLAG_PROXIABLE, Avp, Message, encode_message, utf8_value
from diameter.deferred import DeferredAnswer
from diameter.dictionary import DICTIONARY
from diameter.dictionary.base_rfc6733 import AuthSessionState, ResultCode
from diameter.dictionary.ts29272_s13 import (
    S13_APPLICATION_ID,
    EquipmentStatus,
    ExperimentalResultCode,
)
from diameter.dictionary.ts29272_s13 import (
    VENDOR as VENDOR_3GPP,
)
from diameter.errors import DecodeError
from diameter.events import LaneRequest
from diameter.settings import LocalIdentity
from gateway.classify import Classifier, Decision, Pending
from gateway.events.bus import EventBus
from gateway.hot_counters import HotCounters
from gateway.imei import is_svn
from gateway.metrics import GatewayMetrics
from gateway.observations import ObservationLog
from gateway.policy import REASON_LABEL, STATUS_LABEL
from gateway.shared_count import CountedAnswer

ME_IDENTITY_CHECK = 324

_SESSION_ID = DICTIONARY.avp("Session-Id")
_DRMP = DICTIONARY.avp("DRMP")
_PROXY_INFO = DICTIONARY.avp("Proxy-Info")
_USER_NAME = DICTIONARY.avp("User-Name")
_ORIGIN_HOST = DICTIONARY.avp("Origin-Host")
_TERMINAL_INFORMATION = DICTIONARY.avp("Terminal-Information")
_IMEI = DICTIONARY.avp("IMEI")
_SOFTWARE_VERSION = DICTIONARY.avp("Software-Version")
_TERMINAL_INFORMATION_CODE = _TERMINAL_INFORMATION.code
_USER_NAME_CODE = _USER_NAME.code
_ECHOED_CODES = frozenset((_DRMP.code, _PROXY_INFO.code))  # copied into the answer
# The lane's fields (diameter.lane): the first Terminal-Information's IMEI and Software-Version,
# the first User-Name; requests with DRMP (echoed, RFC 7944 §6) take the full path.
_TERMINAL_INFORMATION_KEY = (_TERMINAL_INFORMATION.code, _TERMINAL_INFORMATION.vendor)
_LANE_FIELDS = (
    (_TERMINAL_INFORMATION_KEY, (_IMEI.code, _IMEI.vendor)),
    (_TERMINAL_INFORMATION_KEY, (_SOFTWARE_VERSION.code, _SOFTWARE_VERSION.vendor)),
    ((_USER_NAME.code, _USER_NAME.vendor),),
)
_LANE_ABSENT = frozenset({(_DRMP.code, _DRMP.vendor)})

log = logging.getLogger("eir.s13")
_DEBUG: Final = logging.DEBUG  # a constant in the compiled build, not a module attribute read

# eir_checks_total labels (status, reason) of the checks answered with an error.
_ERROR_LABELS: dict[int, tuple[str, str]] = {
    ResultCode.DIAMETER_UNABLE_TO_COMPLY: ("unable_to_comply", "internal_error"),
    ResultCode.DIAMETER_MISSING_AVP: ("rejected", "missing_imei"),
}

def application_avps() -> list[Avp]:
    """Vendor-Specific-Application-Id and Auth-Session-State, as every ECA carries them."""
    return [
        Avp.new(
            "Vendor-Specific-Application-Id",
            [Avp.new("Vendor-Id", VENDOR_3GPP), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
        ),
        Avp.new("Auth-Session-State", AuthSessionState.NO_STATE_MAINTAINED),
    ]


class _CountedAnswer(CountedAnswer):
    """The answer to a check waiting for the shared clone count only, given from the count's
    callback: the check's context held here rather than in a partial per check."""

    def __init__(
        self, check: MeIdentityCheck, request: Message | LaneRequest, pending: Pending,
        started: float, echo: bool,
    ) -> None:
        super().__init__()
        self.check = check
        self.message = request
        self.pending = pending
        self.started = started
        self.echo = echo

    def counted(self, n: int) -> None:
        if self.settled:  # withdrawn: the connection went away
            return
        check, request = self.check, self.message
        try:
            decision = check.classifier.decide_when_counted(self.pending, n)
            answer = check._answer(request, decision, self.started, self.echo)
        except Exception:
            # Whatever fails here (the decision, or the answer's observation, events or
            # counters) is 5012, as on the other paths: raised into the count's callback, it
            # left the request unanswered and its place in flight taken.
            answer = check._unable_to_comply(request, self.started)
        self.give(answer)


class MeIdentityCheck:
    """The EIR side of S13: answers ME-Identity-Check-Requests."""

    def __init__(
        self,
        identity: LocalIdentity,
        classifier: Classifier,
        metrics: GatewayMetrics | None = None,
        observations: ObservationLog | None = None,
        mask_imsis: bool = True,
        events: EventBus | None = None,
    ) -> None:
        self.identity = identity
        self.classifier = classifier
        self.metrics = metrics
        # The compiled counters themselves: a native call per check, not a bound method.
        self.counters: HotCounters | None = None if metrics is None else metrics.hot.counters
        self.observations = observations
        self.mask_imsis = mask_imsis
        self.events = events
        self.error_answer_body = application_avps()
        vsai, auth_session_state = (a.encode() for a in self.error_answer_body)
        origin = (
            Avp.new("Origin-Host", identity.origin_host).encode()
            + Avp.new("Origin-Realm", identity.origin_realm).encode()
        )
        # TS 29.272 §7.2.20 order: VSAI, Result-Code | Experimental-Result, Auth-Session-State,
        # Origin-Host, Origin-Realm, Equipment-Status.
        success = Avp.new("Result-Code", ResultCode.DIAMETER_SUCCESS).encode()
        self._blocks: dict[EquipmentStatus | None, bytes] = {
            status: vsai
            + success
            + auth_session_state
            + origin
            + Avp.new("Equipment-Status", status).encode()
            for status in EquipmentStatus
        }
        # TS 29.272 §7.4.3: Experimental-Result and no Result-Code.
        self._blocks[None] = (
            vsai
            + Avp.new(
                "Experimental-Result",
                [
                    Avp.new("Vendor-Id", VENDOR_3GPP),
                    Avp.new(
                        "Experimental-Result-Code",
                        ExperimentalResultCode.DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
                    ),
                ],
            ).encode()
            + auth_session_state
            + origin
        )

    def application(self) -> Application:
        """S13 as the Diameter node serves it: ``handle`` for command 324, vendor 3GPP."""
        return Application(
            S13_APPLICATION_ID,
            {ME_IDENTITY_CHECK: self.handle},
            vendor_id=VENDOR_3GPP,
            error_answer_body=tuple(self.error_answer_body),
            name="S13",
            lanes={ME_IDENTITY_CHECK: Lane(self.handle_lane, _LANE_FIELDS, _LANE_ABSENT)},
        )

    # -- the lane for MICRs of a shape found well formed before (diameter.lane) ------------------
    def handle_lane(self, request: LaneRequest, peer: Any = None) -> bytes | Awaitable[bytes] | DeferredAnswer:
        """``handle`` from the fields the lane sliced out (UTF-8 checked, no DRMP, no
        Proxy-Info); anything ``handle`` answers with an error goes to it with the decoded
        request, so that the answer is the same."""
        started = time.perf_counter()
        imei_data, sv_data, imsi_data = request.fields
        if imei_data is None:
            return self.handle(request.message, peer)  # 5005
        sv = None if sv_data is None else sv_data.decode("utf-8")
        if sv is not None and not is_svn(sv):
            return self.handle(request.message, peer)  # 5004
        imsi = None if imsi_data is None else imsi_data.decode("utf-8")
        try:
            result = self.classifier.classify_sync(imei_data.decode("utf-8"), imsi, sv)
        except Exception:
            return self._unable_to_comply(request.message, started)
        if isinstance(result, Pending):
            return self._pending(request, result, started, False)
        return self._answer(request, result, started, False)

    # -- the handler registered for (16777252, 324) ----------------------------------------------
    def handle(self, request: Message, peer: Any = None) -> bytes | Awaitable[bytes] | DeferredAnswer:
        started = time.perf_counter()
        # One pass over the top-level AVPs: the first Terminal-Information and User-Name, and
        # whether the answer must echo DRMP or Proxy-Info (rare: they are looked up again then).
        terminal = user_name = None
        echo = False
        for avp in request.avps:
            code = avp.code
            if code == _TERMINAL_INFORMATION_CODE:
                if terminal is None and avp.vendor == VENDOR_3GPP:
                    terminal = avp
            elif code == _USER_NAME_CODE:
                if user_name is None and not avp.vendor:
                    user_name = avp
            elif code in _ECHOED_CODES:
                echo = True
        imei_avp = None if terminal is None else terminal.find(_IMEI.code, VENDOR_3GPP)
        if imei_avp is None:
            # TS 29.272 Table 6.2.1.1/1: only the IMEI identifies the equipment on S13 (a
            # 3GPP2-MEID alone does not); RFC 6733 §7.5: zero-filled IMEI in Failed-AVP.
            missing = _TERMINAL_INFORMATION if terminal is None else _IMEI
            return self._error(
                request,
                ResultCode.DIAMETER_MISSING_AVP,
                f"{missing.name} missing",
                Avp.zero_filled(missing),
                started,
            )
        try:
            # IMEI, Software-Version and User-Name are UTF8String (TS 29.272 §7.3.4, §7.3.5;
            # RFC 6733 §8.14): decoded as Avp.value would, without its look-up of the type.
            imei = utf8_value(imei_avp.data)
            sv_avp = terminal.find(_SOFTWARE_VERSION.code, VENDOR_3GPP) if terminal else None
            sv = None if sv_avp is None else utf8_value(sv_avp.data)
            imsi = None if user_name is None else utf8_value(user_name.data)
        except DecodeError as exc:
            return self._error(request, exc.result_code, str(exc), None, started)
        if sv is not None and not is_svn(sv):
            # TS 29.272 §7.3.5: "the 2-digit Software Version Number"; RFC 6733 §7.1.5 5004
            # with the AVP inside its Terminal-Information (§7.5).
            assert terminal is not None and sv_avp is not None
            failed = Avp(terminal.code, terminal.flags, terminal.vendor, sv_avp.encode())
            return self._error(
                request,
                ResultCode.DIAMETER_INVALID_AVP_VALUE,
                "Software-Version is not 2 decimal digits",
                failed,
                started,
            )
        try:
            result = self.classifier.classify_sync(imei, imsi, sv)
        except Exception:
            return self._unable_to_comply(request, started)
        if isinstance(result, Pending):
            return self._pending(request, result, started, echo)
        return self._answer(request, result, started, echo)

    def _pending(
        self, request: Message | LaneRequest, result: Pending, started: float, echo: bool
    ) -> Awaitable[bytes] | DeferredAnswer:
        count = result.clone_count
        if count is not None and self.classifier.counted(result):
            # Waiting for the shared clone count only: answered from the count's callback
            # (the checks of one round trip to Redis settled in one call), with no task,
            # coroutine or future per check: the connection sends it as it is given.
            answer = _CountedAnswer(self, request, result, started, echo)
            count.add_answer(answer)
            return answer
        return self._resolve(request, result, started, echo)

    async def _resolve(
        self, request: Message | LaneRequest, pending: Pending, started: float, echo: bool
    ) -> bytes:
        try:
            decision = await self.classifier.resolve(pending)
        except Exception:
            return self._unable_to_comply(request, started)
        return self._answer(request, decision, started, echo)

    def _unable_to_comply(self, request: Message | LaneRequest, started: float) -> bytes:
        # A store or registry failure must never become a 2001 without Equipment-Status:
        # RFC 6733 §7.1.5 5012 DIAMETER_UNABLE_TO_COMPLY, counted in eir_checks_total.
        log.exception("classification failed")
        if isinstance(request, LaneRequest):
            request = request.message
        return self._error(
            request, ResultCode.DIAMETER_UNABLE_TO_COMPLY, "classification failed", None, started
        )

    def _answer(
        self, request: Message | LaneRequest, decision: Decision, started: float,
        echo: bool = True,
    ) -> bytes:
        if isinstance(request, LaneRequest):
            # No DRMP, no Proxy-Info (the lane's shapes have none): header, Session-Id, block.
            answer = lane.answer(request.raw, self._blocks[decision.status])
        else:
            answer = self._message_answer(request, decision, echo)
        if self.events is not None:
            # Before the observation is recorded: new_imsi asks the log what came before it.
            self._raise_events(request, decision)
        imei = decision.imei
        if self.observations is not None and imei is not None and decision.imsi:
            self.observations.record(imei.body, decision.imsi)
        counters = self.counters
        if counters is not None:
            counters.count_check(
                STATUS_LABEL[decision.enforcement],
                REASON_LABEL[decision.decisive],
                time.perf_counter() - started,
            )
        if log.isEnabledFor(_DEBUG):
            self._log_decision(request, decision)
        return answer

    def _message_answer(self, request: Message, decision: Decision, echo: bool) -> bytes:
        avps = request.avps
        first = avps[0] if avps else None
        if first is not None and first.code == _SESSION_ID.code and not first.vendor:
            head = first.encode()
        else:
            session_id = request.find(_SESSION_ID.code)
            head = b"" if session_id is None else session_id.encode()
        if not echo:
            body = head + self._blocks[decision.status]
        else:
            drmp = request.find(_DRMP.code)
            if drmp is not None:
                # RFC 7944 §6: the answer may carry the request's priority.
                head += drmp.encode()
            body = head + self._blocks[decision.status]
            for avp in avps:
                # RFC 6733 §6.2: Proxy-Info AVPs copied, in order.
                if avp.code == _PROXY_INFO.code and not avp.vendor:
                    body += avp.encode()
        return encode_message(
            request.flags & FLAG_PROXIABLE,
            ME_IDENTITY_CHECK,
            request.application_id,
            request.hop_by_hop,
            request.end_to_end,
            body,
        )

    def _raise_events(self, request: Message | LaneRequest, decision: Decision) -> None:
        """Hand the decision to the event bus (detection and queueing only, never waits)."""
        assert self.events is not None
        if isinstance(request, LaneRequest):
            request = request.message
        avp = request.find(_ORIGIN_HOST.code)
        try:
            origin_host = None if avp is None else avp.value
        except DecodeError:
            origin_host = None
        self.events.on_decision(decision, origin_host, "s13")

    def _log_decision(self, request: Message | LaneRequest, decision: Decision) -> None:
        """One structured line per decision (DESIGN.md §6): which request (Session-Id, the
        MME's Origin-Host), which equipment, the answer and every reason; IMSI masked."""
        if isinstance(request, LaneRequest):
            request = request.message
        fields: dict[str, object] = {}
        for name, avp_def in (("session_id", _SESSION_ID), ("origin_host", _ORIGIN_HOST)):
            avp = request.find(avp_def.code)
            try:
                fields[name] = None if avp is None else avp.value
            except DecodeError:
                fields[name] = None
        fields.update(decision.log_fields(self.mask_imsis))
        text = " ".join(
            f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in fields.items()
        )
        log.debug("check %s", text, extra={"fields": fields})

    def _error(
        self,
        request: Message,
        result_code: int,
        text: str,
        failed_avp: Avp | None,
        started: float,
    ) -> bytes:
        answer = answer_to(
            request,
            self.identity,
            result_code,
            body=self.error_answer_body,
            error_message=text,
            failed_avp=failed_avp,
        )
        if self.metrics is not None:
            status, reason = _ERROR_LABELS.get(result_code, ("rejected", "invalid_request"))
            self.metrics.count_check(status, reason, time.perf_counter() - started)
        return answer.encode()
