"""The classification pipeline: format -> TAC -> lists -> registry -> policy (DESIGN.md §2, §4).

Two entry points share one implementation:

* :meth:`Classifier.classify_sync` does everything that needs no waiting. It returns a
  :class:`Decision`, or a :class:`Pending` when only a registry verdict is missing (no registry
  cache hit and the outcome not yet decided by an earlier reason). The S13 handler answers a
  Decision at once, without creating a task (STYLE.md item 7), and awaits
  :meth:`Classifier.resolve` for a Pending.
* :meth:`Classifier.classify` is both in one coroutine.

The registry is waited for at most ``budget`` seconds (asyncio.timeout); a timeout or
:class:`RegistryUnavailable` gives ``registry_unavailable``. The hot path does no SQLite, no
logging and raises nothing for control flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from gateway import state
from gateway.clone_tracker import CloneTracker
from gateway.imei import Imei, Malformed, luhn_digit, parse_imei
from gateway.lists import (
    ListColour,
    ListMatch,
    ListSnapshot,
    OperatorLists,
)
from gateway.observations import mask_imsi
from gateway.policy import EquipmentStatus, Policy, Reason
from gateway.shared_count import SharedCount
from gateway.tac import TacDatabase
from registry_client.bounded import ShardedFifo
from registry_client.model import (
    RegistryStatus,
    RegistryUnavailable,
    RegistryVerdict,
    VerdictOrigin,
    VerdictSource,
)

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("eir.classify")

RESULT_SUCCESS = 2001  # RFC 6733 §7.1.2 DIAMETER_SUCCESS
RESULT_EQUIPMENT_UNKNOWN = 5422  # TS 29.272 §7.4.3 DIAMETER_ERROR_EQUIPMENT_UNKNOWN

_LIST_REASON = {
    ListColour.WHITE: Reason.WHITELISTED,
    ListColour.BLACK: Reason.BLACKLISTED,
    ListColour.GREY: Reason.GREYLISTED,
}


# A NamedTuple: immutable like a frozen dataclass, built in a quarter of the time. Fresh checks
# of clean handsets make none (see _CLEAN and registry_findings).
class Finding(NamedTuple):
    reason: Reason
    detail: str = ""


_CLEAN = (Finding(Reason.CLEAN),)

# policy.decision_cache_size when the configuration does not say (about 23 MiB of decisions).
DEFAULT_DECISION_CACHE_SIZE = 65_536


class Decision:
    """The outcome of one check. A ``None`` status means answer 5422 EQUIPMENT_UNKNOWN.

    Immutable: the decision cache shares one with every check that reuses it. Its attributes
    are Final: mypy refuses an assignment, and the compiled build (``eir_compiled``) has no
    setter for them, so one raises AttributeError. A plain class rather than a NamedTuple: a
    NamedTuple's ``__new__`` is interpreted Python (about 3,700 instructions of every fresh
    check), and it would compare equal to a plain tuple."""

    __slots__ = (
        "decided_at", "decisive", "enforcement", "findings", "imei", "imsi", "list_matches",
        "monitor_mode", "registry", "status",
    )

    def __init__(
        self,
        status: EquipmentStatus | None,
        enforcement: EquipmentStatus | None,
        monitor_mode: bool,
        decisive: Reason,
        findings: tuple[Finding, ...],
        imei: Imei | None,
        imsi: str | None,
        list_matches: tuple[ListMatch, ...] = (),
        registry: RegistryVerdict | None = None,
        decided_at: float = 0.0,
    ) -> None:
        self.status: Final = status  # what is answered (WHITELISTED in monitor mode)
        self.enforcement: Final = enforcement  # what enforcement answers / would answer
        self.monitor_mode: Final = monitor_mode
        self.decisive: Final = decisive  # the reason that set ``enforcement``
        self.findings: Final = findings  # every reason, in precedence order
        self.imei: Final = imei  # None when malformed
        self.imsi: Final = imsi
        self.list_matches: Final = list_matches
        self.registry: Final = registry
        # Clock time of the classification (a reused decision keeps it).
        self.decided_at: Final = decided_at

    def __repr__(self) -> str:
        return (
            f"Decision(status={self.status!r}, enforcement={self.enforcement!r}, "
            f"monitor_mode={self.monitor_mode!r}, decisive={self.decisive!r}, "
            f"findings={self.findings!r}, imei={self.imei!r}, imsi={self.imsi!r}, "
            f"list_matches={self.list_matches!r}, registry={self.registry!r}, "
            f"decided_at={self.decided_at!r})"
        )

    @property
    def registry_age(self) -> float | None:
        """Seconds between obtaining the registry verdict and deciding; None without one."""
        v = self.registry
        if v is None or not v.fetched_at:
            return None
        return max(self.decided_at - v.fetched_at, 0.0)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(f.reason for f in self.findings)

    @property
    def equipment_unknown(self) -> bool:
        return self.status is None

    @property
    def result_code(self) -> int:
        return RESULT_EQUIPMENT_UNKNOWN if self.status is None else RESULT_SUCCESS

    @property
    def registry_origin(self) -> VerdictOrigin | None:
        return None if self.registry is None else self.registry.origin

    def log_fields(self, mask: bool = True) -> dict[str, object]:
        """Fields for the one structured log line per decision (DESIGN.md §6); IMSI masked
        unless ``mask`` is False. Build it only when the log level is enabled."""
        imsi = self.imsi
        return {
            "imei": None if self.imei is None else self.imei.body,
            "imsi": (mask_imsi(imsi) if mask else imsi) or None,
            "status": None if self.status is None else self.status.name,
            "enforcement": None if self.enforcement is None else self.enforcement.name,
            "result_code": self.result_code,
            "monitor_mode": self.monitor_mode,
            "decisive": self.decisive.value,
            "reasons": [f.reason.value for f in self.findings],
            "registry_origin": None if self.registry is None else self.registry.origin.value,
        }


class Pending:
    """Everything decided except the registry verdict ("needs the registry"), or the clone
    count shared across gateways.

    Immutable, its attributes Final as :class:`Decision`'s. A plain class, not a frozen
    dataclass: one is made per check that waits for the shared clone count, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~11,000 instructions of
    the compiled build's ~200,000 per such check."""

    __slots__ = ("clone_count", "findings", "full", "imei", "imsi", "list_matches", "now",
                 "verdict")

    def __init__(
        self,
        imei: Imei,
        imsi: str | None,
        findings: tuple[Finding, ...],
        list_matches: tuple[ListMatch, ...],
        now: float,
        clone_count: SharedCount | None = None,
        full: bool = False,
        verdict: RegistryVerdict | None = None,
    ) -> None:
        self.imei: Final = imei
        self.imsi: Final = imsi
        self.findings: Final = findings
        self.list_matches: Final = list_matches
        self.now: Final = now
        # Clone detection shared across gateways: the shared count, not yet known (else None).
        self.clone_count: Final = clone_count
        self.full: Final = full
        # The registry's cached verdict when only the shared count is awaited (None: not
        # cached, or not needed); used only if the count does not decide.
        self.verdict: Final = verdict

    def __repr__(self) -> str:
        return (f"Pending(imei={self.imei!r}, imsi={self.imsi!r}, findings={self.findings!r}, "
                f"clone_count={self.clone_count!r}, full={self.full!r}, "
                f"verdict={self.verdict!r})")


# The findings of a verdict without reports depend on its status and source alone (a handful of
# combinations): built once, instead of formatting the same text for every check.
_PLAIN_FINDINGS: dict[tuple[RegistryStatus, str], tuple[Finding, ...]] = {}
_PLAIN_FINDINGS_SIZE = 256


def registry_findings(verdict: RegistryVerdict) -> tuple[Finding, ...]:
    """Registry verdict -> reasons (Q.5057 statuses as in registry-api.yaml)."""
    if verdict.reports:
        return _registry_findings(verdict)
    key = (verdict.status, verdict.source)
    findings = _PLAIN_FINDINGS.get(key)
    if findings is None:
        findings = _registry_findings(verdict)
        if len(_PLAIN_FINDINGS) < _PLAIN_FINDINGS_SIZE:
            _PLAIN_FINDINGS[key] = findings
    return findings


def _registry_findings(verdict: RegistryVerdict) -> tuple[Finding, ...]:
    out: list[Finding] = []
    if verdict.status is RegistryStatus.NOT_MANUFACTURED:
        out.append(
            Finding(Reason.REGISTRY_NOT_MANUFACTURED, f"not manufactured ({verdict.source})")
        )
    active = verdict.active_reports
    if active:
        text = ", ".join(f"{r.type.value} in {r.country}" for r in active)
        out.append(Finding(Reason.REGISTRY_REPORTED, text))
    if verdict.status is RegistryStatus.UNKNOWN and not out:
        out.append(Finding(Reason.REGISTRY_UNKNOWN, "TAC owner not participating"))
    return tuple(out)


def _clone_finding(n: int, window: float) -> Finding:
    return Finding(Reason.CLONE_SUSPECTED, f"{n} IMSIs within {window:g} s")


def _list_detail(match: ListMatch) -> str:
    e = match.entry
    text = f"{e.kind.value} {e.value}"
    if e.imsi:
        text += " with the IMSI"
    if e.reason:
        text += f": {e.reason}"
    return text


class Classifier:
    """Holds the stores and the policy; see the module docstring for the two entry points."""

    def __init__(
        self,
        policy: Policy,
        tac: TacDatabase | None = None,
        lists: OperatorLists | None = None,
        registry: VerdictSource | None = None,
        budget: float = 0.05,
        clone: CloneTracker | None = None,
        clock: Callable[[], float] = time.time,
        decision_cache_size: int = DEFAULT_DECISION_CACHE_SIZE,
    ) -> None:
        self.policy = policy
        # An empty TAC table cannot tell known from unknown: treat it as absent.
        self.tac = tac if tac is not None and len(tac) else None
        self.lists = lists if lists is not None else OperatorLists(None)
        self.registry = registry
        self.budget = budget
        self.clone = clone
        self.clock = clock
        # Recent decisions by (IMEI, Software-Version, IMSI): a handset checked again (re-attach,
        # TAU) gets the same decision while the lists snapshot, the policy and the registry
        # verdict it was decided with are unchanged (checked on every reuse). 0 turns it off.
        self.decision_cache_size = decision_cache_size
        # Oldest out in O(1) and no O(n) table rebuild inside one check (registry_client.bounded;
        # a plain dict also iterated past every slot deleted before its first entry).
        self._memo: ShardedFifo[
            tuple[str, str | None, str | None], tuple[Decision, ListSnapshot, Policy]
        ] = ShardedFifo(decision_cache_size)
        self.decision_cache_hits = 0

    @classmethod
    def from_config(
        cls, config: GatewayConfig, registry: VerdictSource | None = None
    ) -> Classifier:
        """Open the stores named by the config (importing changed source files) and load them."""
        tac = state.open_tac(config)
        lists = state.open_operator_lists(config)
        cd = config.clone_detection
        clone = None
        if cd.enabled:
            clone = CloneTracker(cd.threshold, cd.window, cd.max_imeis)
            if config.observations.enabled:
                # The IMSIs seen per IMEI survive a restart (and inform `eir-gateway check`).
                seeded = state.seed_clone_tracker(config, clone, time.time())
                log.info("clone detection: %d recent IMEI-IMSI pairs from the log", seeded)
        cache_size = int(config.values.get("policy.decision_cache_size", DEFAULT_DECISION_CACHE_SIZE))
        return cls(
            config.policy,
            tac,
            lists,
            registry,
            config.registry.budget,
            clone,
            decision_cache_size=cache_size,
        )

    @property
    def decision_cache_len(self) -> int:
        return len(self._memo)

    def reload(self, policy: Policy | None = None) -> None:
        """SIGHUP: reload the lists (blocking SQLite read: call via asyncio.to_thread) and,
        when given, swap in a new policy. Each swap is one attribute assignment, so checks in
        flight see either the old or the new state, never a mix."""
        self.lists.reload()
        if policy is not None:
            self.policy = policy

    # --- synchronous part -------------------------------------------------------------------

    def classify_sync(
        self,
        imei: str,
        imsi: str | None = None,
        sv: str | None = None,
        *,
        full: bool = False,
    ) -> Decision | Pending:
        """Classify without waiting. ``full`` is a diagnostic check: it consults the registry
        even when already decided, and records nothing (no clone-detection sighting)."""
        snapshot, policy = self.lists.snapshot, self.policy
        memo = self._memo
        # Clone detection counts every check, so a check it sees is never answered from memory.
        if full or self.decision_cache_size == 0 or (imsi and self.clone is not None):
            return self._classify(imei, imsi, sv, full, snapshot)
        key = (imei, sv, imsi)
        entry = memo.get(key)
        if entry is not None:
            decision, was_snapshot, was_policy = entry
            if was_snapshot is snapshot and was_policy is policy:
                verdict = decision.registry
                registry = self.registry
                if verdict is None or (
                    registry is not None
                    and decision.imei is not None
                    and registry.cached(decision.imei.body) is verdict
                ):
                    self.decision_cache_hits += 1
                    return decision
            memo.pop(key)
        result = self._classify(imei, imsi, sv, False, snapshot)
        if type(result) is Decision:
            memo.put(key, (result, snapshot, policy))
        return result

    def _classify(
        self, imei: str, imsi: str | None, sv: str | None, full: bool, snapshot: ListSnapshot
    ) -> Decision | Pending:
        now = self.clock()
        parsed = parse_imei(imei, sv)
        if isinstance(parsed, Malformed):
            return self._decide((Finding(Reason.MALFORMED, parsed.detail),), None, imsi, (), now)
        body = parsed.body
        value = int(body)
        findings: list[Finding] = []
        matches = snapshot.match(value, imsi)
        for m in matches:
            findings.append(Finding(_LIST_REASON[m.entry.colour], _list_detail(m)))
        given = parsed.given_check_digit
        if given is not None:
            luhn = luhn_digit(value)
            if ord(given) - 48 != luhn:
                findings.append(
                    Finding(Reason.BAD_CHECK_DIGIT, f"check digit {given}, Luhn gives {luhn}")
                )
        if parsed.is_test:
            findings.append(
                Finding(Reason.NULL_OR_TEST, "null IMEI" if parsed.is_null else "test TAC")
            )
        tac = self.tac
        if tac is not None and not tac.contains(value // 1_000_000):
            findings.append(Finding(Reason.TAC_UNKNOWN, f"TAC {body[:8]}"))
        clone = self.clone
        shared = None
        if clone is not None and imsi:
            # A full check is a diagnostic (check CLI, API): it must not count as a sighting.
            n = clone.peek(body, imsi, now) if full else clone.suspected(body, imsi, now)
            if n:
                findings.append(_clone_finding(n, clone.window))
            else:
                shared = clone.shared_count(body)
                # Other gateways' sightings may push it over: wait for them, unless decided.
                if shared is not None and not (full or not self._decided(findings)):
                    shared = None
        registry = self.registry
        if registry is not None and (full or not self._decided(findings)):
            verdict = registry.cached(body)
            if verdict is None:
                return Pending(parsed, imsi, tuple(findings), tuple(matches), now, shared, full)
            if shared is not None:
                return Pending(parsed, imsi, tuple(findings), tuple(matches), now, shared, full,
                               verdict)
            findings.extend(registry_findings(verdict))
            return self._decide(findings, parsed, imsi, matches, now, verdict)
        if shared is not None:
            return Pending(parsed, imsi, tuple(findings), tuple(matches), now, shared, full)
        return self._decide(findings, parsed, imsi, matches, now)

    def _decided(self, findings: list[Finding]) -> bool:
        is_decisive = self.policy.is_decisive
        for f in findings:
            if is_decisive(f.reason):
                return True
        return False

    def _decide(
        self,
        findings: tuple[Finding, ...] | list[Finding],
        imei: Imei | None,
        imsi: str | None,
        matches: tuple[ListMatch, ...] | list[ListMatch],
        now: float,
        verdict: RegistryVerdict | None = None,
    ) -> Decision:
        if not findings:
            findings = _CLEAN
        outcome = self.policy.decide([f.reason for f in findings])
        return Decision(
            outcome.status,
            outcome.enforcement,
            outcome.monitor_mode,
            outcome.decisive,
            tuple(findings),
            imei,
            imsi,
            tuple(matches),
            verdict,
            now,
        )

    # --- asynchronous part ------------------------------------------------------------------

    def counted(self, pending: Pending) -> bool:
        """Whether the shared clone count is all ``pending`` waits for (its registry verdict
        cached, or no registry): :meth:`decide_counted` then decides it, no coroutine needed."""
        return pending.clone_count is not None and (
            pending.verdict is not None or self.registry is None
        )

    def decide_counted(self, pending: Pending, n: int) -> Decision | None:
        """``pending``'s decision once its shared clone count is ``n``; None when the count
        does not decide and the registry's verdict was not cached (see :meth:`resolve`)."""
        findings = list(pending.findings)
        clone = self.clone
        # A count that does not decide leaves the findings as they were when the check chose to
        # wait for it (undecided, or a full check's): no need to ask the policy again.
        decided = False
        if clone is not None and n > clone.threshold:
            findings.append(_clone_finding(n, clone.window))
            decided = self._decided(findings)
        registry = self.registry
        if registry is None or not (pending.full or not decided):
            return self._decide(findings, pending.imei, pending.imsi, pending.list_matches,
                                self.clock())
        verdict = pending.verdict
        if verdict is None:
            return None
        findings.extend(registry_findings(verdict))
        return self._decide(findings, pending.imei, pending.imsi, pending.list_matches,
                            self.clock(), verdict)

    def decide_when_counted(self, pending: Pending, n: int) -> Decision:
        """:meth:`decide_counted` of a ``pending`` that :meth:`counted`: nothing else to wait
        for, so always a decision."""
        decision = self.decide_counted(pending, n)
        assert decision is not None  # counted(): nothing else to wait for
        return decision

    async def resolve(self, pending: Pending) -> Decision:
        """Wait (at most ``budget``) for the registry verdict a Pending lacks, then decide."""
        findings = list(pending.findings)
        verdict: RegistryVerdict | None = None
        registry = self.registry
        clone = self.clone
        if pending.clone_count is not None and clone is not None:
            n = await clone.wait_shared(pending.clone_count)
            decision = self.decide_counted(pending, n)
            if decision is not None:
                return decision
            if n > clone.threshold:
                findings.append(_clone_finding(n, clone.window))
        if registry is None:
            findings.append(Finding(Reason.REGISTRY_UNAVAILABLE, "no registry configured"))
        else:
            try:
                async with asyncio.timeout(self.budget):
                    verdict = await registry.check(pending.imei.body)
            except TimeoutError:
                findings.append(
                    Finding(Reason.REGISTRY_UNAVAILABLE, f"no verdict within {self.budget:g} s")
                )
            except RegistryUnavailable as exc:
                findings.append(Finding(Reason.REGISTRY_UNAVAILABLE, str(exc) or "unavailable"))
            else:
                findings.extend(registry_findings(verdict))
        now = self.clock()
        return self._decide(
            findings, pending.imei, pending.imsi, pending.list_matches, now, verdict
        )

    async def classify(
        self, imei: str, imsi: str | None = None, sv: str | None = None, *, full: bool = False
    ) -> Decision:
        result = self.classify_sync(imei, imsi, sv, full=full)
        if isinstance(result, Pending):
            return await self.resolve(result)
        return result
