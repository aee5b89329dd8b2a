"""Overload control, sans-IO: measured queueing delay in, 3004 decisions and DOIC reports out.

The transport adapter measures how long a request now arriving would wait before it is served
(event loop lag plus the received bytes not yet processed, divided by the rate they are being
processed at) and calls ``update(delay, now)`` every ``interval``. Shedding starts once the delay
has been past ``target_delay`` twice in a row (a single late measurement is a hiccup) and stops
at the first measurement back under the target: the current delay decides, not an average, so a
stall that is over costs no more refusals. While the delay stays past the target the reduction
percentage rises (further the more the target is exceeded). The share that held the delay is
remembered, a step lower each measurement under the target: a sustained overload that comes back
within a few measurements resumes there at once instead of climbing again.

Refused requests get a pre-built 3004 DIAMETER_TOO_BUSY (RFC 6733 §7.1.3) instead of being
decoded and classified, in each connection's own share (``apportion``): under overload the peers
sending more than their fair share of the traffic are refused first, a peer within it not at all.

RFC 7683 (DOIC), reporting node with the loss algorithm (§6): the answer to a request carrying
OC-Supported-Features, whatever the answer (a MICA, an error, a 3004), carries
OC-Supported-Features {OC-Feature-Vector OLR_DEFAULT_ALGO} (§5.1.2: MUST), and, while a report
is in force, OC-OLR {OC-Sequence-Number, OC-Report-Type HOST_REPORT, OC-Reduction-Percentage,
OC-Validity-Duration}. The loss algorithm is selected whatever the request's OC-Feature-Vector
offers: it is the only one this node has, and every DOIC node supports it (§6.1; a vector
without its bit breaks §5.1.1, and the answer must carry OC-Supported-Features all the same).
When the overload ends, the report is rescinded with OC-Validity-Duration 0 (§5.2.1.4, §5.2.3)
for one validity period. Requests without OC-Supported-Features never get a DOIC AVP (§5.1.2).

``ReactingNode`` is the other side (§5.2.1.3, §5.2.2, §6): what an MME honouring our reports
does; the simulator uses it with ``--doic``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from diameter.codec import FLAG_ERROR, FLAG_PROXIABLE, HEADER_LENGTH, Avp, decode_avps
from diameter.dictionary.base_rfc6733 import ResultCode
from diameter.dictionary.rfc7683_doic import OLR_DEFAULT_ALGO, OcReportType
from diameter.settings import LocalIdentity

SESSION_ID, PROXY_INFO = 263, 284
OC_SUPPORTED_FEATURES = 621
_AVP_HEADER = struct.Struct("!II")
_PROXY_INFO_CODE = PROXY_INFO.to_bytes(4, "big")
_OC_SUPPORTED_FEATURES_CODE = OC_SUPPORTED_FEATURES.to_bytes(4, "big")
_SESSION_ID_CODE = SESSION_ID.to_bytes(4, "big")
_HEADER = struct.Struct("!B3sB3sIII")
# Answer headers' first 5 octets (version, length, flags) by (request's P bit, end of the copied
# Session-Id): a few per peer (Session-Id lengths), bounded all the same.
_HEADS_SIZE = 256


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    # Queueing delay (seconds) past which requests are refused; 0 (the library's default; the
    # gateway's configuration turns it on) leaves overload control off.
    target_delay: float = 0.0
    # How often the adapter measures the delay and the reduction is adjusted.
    interval: float = 0.1
    # RFC 7683: answer OC-Supported-Features and send OC-OLR to peers that ask for it.
    doic: bool = True
    # OC-Validity-Duration of our reports (RFC 7683 §7.5: 30 s when absent, at most 86,400).
    validity_duration: int = 30
    # RFC 7683 §10.4: the peers trusted for DOIC (Origin-Host patterns, fnmatch,
    # case-insensitive; empty: every peer). Another's requests are taken as if their DOIC AVPs
    # had been stripped: their answers carry none (no report goes to an unauthorised peer).
    doic_peers: tuple[str, ...] = ()


# Points added per update, per multiple of the target exceeded (capped), and taken off the
# share remembered when shedding stops. Multiples of 5 keep the reports (and their sequence
# numbers) few.
_RISE_PER_TARGET = 10
_RISE_MAX = 50
_FALL = 5
# The least share of the node's capacity admitted (fairly) however high the reduction: what
# keeps well-behaved peers served beside a flood. An optimistic capacity (it is measured
# from the time spent on reads alone) admits at most a little more than the node handles.
_MIN_ADMITTED = 0.1
# OC-Sequence-Number units: 2**-32 s (sequence numbers are times, see OverloadControl).
_TICKS_PER_SECOND = 1 << 32
# Measurements past the target in a row before shedding starts.
_ENTER_AFTER = 2
# Measurements under the target after which the remembered share is forgotten: a sustained
# overload comes back within one or two; stalls seconds apart are separate events, each
# allowed its single late measurement.
_REMEMBER = 3


class OverloadControl:
    """The node's overload state: reduction percentage, 3004 decisions, DOIC report."""

    def __init__(
        self,
        settings: OverloadSettings | None = None,
        identity: LocalIdentity | None = None,
        sequence_base: int = 0,
    ) -> None:
        self.settings = settings or OverloadSettings()
        self.reduction = 0  # percent of new requests refused (and asked of DOIC peers)
        self.delay = 0.0  # the last queueing delay measured
        self.refused = 0  # requests answered 3004 by this control
        # RFC 7683 §5.2.1.4: a new sequence number for each new report content. It is the time
        # the report was made, in 2**-32 s since the epoch: the start time (Origin-State-Id,
        # seconds) plus the time since the first measurement. So a restarted node's reports
        # are not older, and the reports of the workers of one host (``--workers N``: each
        # reports its own load, see README) are ordered by when they were made, to about a
        # second: a peer that reconnects to another worker has that worker's next report
        # taken as the newer one (§5.2.1.3), not ignored until the old one's validity ends.
        self.sequence_number = self._base = sequence_base << 32
        self._started: float | None = None  # ``now`` at the first measurement
        self._over = 0  # measurements past the target in a row
        self._under = 0  # and under it
        # The share that last held the delay (less _FALL), resumed at once when the delay is
        # past the target again within _REMEMBER measurements.
        self._level = 0
        self._ended_at: float | None = None
        self._report: bytes = b""
        self._block = b""
        self._heads: dict[int, bytes] = {}
        # Each connection's share of the reduction (``apportion``), keyed by its peer core; one
        # not in it (new since the last measurement) gets ``reduction``.
        self.shares: dict[Hashable, int] = {}
        self.supported_features = Avp.new(
            "OC-Supported-Features", [Avp.new("OC-Feature-Vector", OLR_DEFAULT_ALGO)]
        ).encode()
        if identity is not None:
            self.set_identity(identity)

    def set_identity(self, identity: LocalIdentity) -> None:
        # The constant part of every 3004: Result-Code, Origin-Host, Origin-Realm (RFC 6733 §7.2).
        self._block = b"".join(
            a.encode()
            for a in (
                Avp.new("Result-Code", ResultCode.DIAMETER_TOO_BUSY),
                Avp.new("Origin-Host", identity.origin_host),
                Avp.new("Origin-Realm", identity.origin_realm),
            )
        )
        self._heads = {}

    @property
    def enabled(self) -> bool:
        return self.settings.target_delay > 0

    @property
    def overloaded(self) -> bool:
        return self.reduction > 0

    # -- the controller ----------------------------------------------------------------------
    def update(self, delay: float, now: float) -> None:
        """One measurement of the queueing delay (seconds) at ``now``."""
        self.delay = delay
        target = self.settings.target_delay
        if target <= 0:
            return
        before = self.reduction
        if delay > target:
            self._over += 1
            self._under = 0
            if before:
                rise = min(_RISE_MAX, _RISE_PER_TARGET * max(1, int(delay / target)))
                self.reduction = min(100, before + rise)
            elif self._level:
                # Back past the target before the last share ran down: the same overload.
                self.reduction = self._level
            elif self._over >= _ENTER_AFTER:
                # A single late measurement (a scheduling hiccup) does not start shedding.
                self.reduction = min(_RISE_MAX, _RISE_PER_TARGET * max(1, int(delay / target)))
            self._level = self.reduction
        else:
            self._over = 0
            self._under += 1
            # Under the target: no request waits too long now, so none is refused. The share
            # is remembered a step lower (it held the delay; a little less may too), a while.
            self.reduction = 0
            if before:
                self._level = max(0, before - _FALL)
            elif self._under > _REMEMBER:
                self._level = 0
        if self._started is None:
            self._started = now
        if self.reduction != before:
            made = self._base + int((now - self._started) * _TICKS_PER_SECOND)
            self.sequence_number = max(self.sequence_number + 1, made)
            self._report = b""
            self._ended_at = now if self.reduction == 0 else None
            if not self.reduction:
                self.shares = {}

    def apportion(self, demands: Mapping[Hashable, int], capacity: float = 0.0) -> None:
        """Spread the reduction over the connections, by what each offered (octets) since the
        last measurement. The share of the traffic to admit, ``100 - reduction`` percent of
        it, but never less than a tenth of ``capacity`` (the octets the node handles in that
        time; 0: unknown), is divided max-min fairly (water-filling): a connection offering
        less than an equal part of it is admitted whole, those above give way, each in
        proportion to its excess. RFC 7683 leaves the choice of what to refuse to the
        reporting node; a well-behaved MME must not pay for another's flood, even when the
        flood alone calls for refusing everything (the node then admits that tenth, fairly
        shared, and refuses the flood whole)."""
        reduction = self.reduction
        total = sum(demands.values())
        if not reduction or total <= 0:
            self.shares = {}
            return
        remaining = max(total * (100 - reduction) / 100, capacity * _MIN_ADMITTED)
        left = len(demands)
        shares: dict[Hashable, int] = {}
        for key, demand in sorted(demands.items(), key=_by_demand):
            fair = remaining / left
            left -= 1
            if demand <= fair:
                shares[key] = 0
                remaining -= demand
            else:
                # Rounded up: the connections above their part never get more than it. The
                # 1e-9 keeps float error (58.00000000000001 for an exact 58) from adding a point.
                shares[key] = min(100, math.ceil(100 * (demand - fair) / demand - 1e-9))
                remaining -= fair
        self.shares = shares

    # -- DOIC ----------------------------------------------------------------------------------
    def report(self, now: float) -> bytes:
        """The OC-OLR to send now (encoded), or b"" when there is no report in force."""
        if not self.reduction:
            ended = self._ended_at
            if ended is None or now - ended > self.settings.validity_duration:
                return b""
        if not self._report:
            children = [
                Avp.new("OC-Sequence-Number", self.sequence_number),
                Avp.new("OC-Report-Type", OcReportType.HOST_REPORT),
                Avp.new("OC-Reduction-Percentage", self.reduction),
                # §5.2.1.4: validity 0 rescinds the report once the overload has ended.
                Avp.new("OC-Validity-Duration", self.settings.validity_duration if self.reduction else 0),
            ]
            self._report = Avp.new("OC-OLR", children).encode()
        return self._report

    def doic_avps(self, now: float) -> bytes:
        """The DOIC AVPs (encoded) for the answer to a request that carried
        OC-Supported-Features (RFC 7683 §5.1.2), b"" with DOIC off."""
        if not self.settings.doic:
            return b""
        return self.supported_features + self.report(now)

    def too_busy(self, raw: bytes, now: float, doic_trusted: bool = True) -> bytes:
        """The 3004 answer to the request ``raw``, not decoded (RFC 6733 §7.2 answer-message:
        E bit set, Session-Id first, Origin-Host, Origin-Realm, Result-Code, every Proxy-Info
        in order, §6.2: the request's identifiers and P bit), with the DOIC AVPs when it
        carried OC-Supported-Features and its peer is ``doic_trusted``."""
        cut = 0
        # bytes.find, not ``in``: CPython's bytes ``in`` first tries the operand as an integer
        # and clears the TypeError, some 1,100 instructions of each test (valgrind).
        if raw.find(_PROXY_INFO_CODE) < 0 and raw.find(_OC_SUPPORTED_FEATURES_CODE) < 0:
            # The common case, told by substring tests (C speed): no Proxy-Info to copy and no
            # DOIC, and the Session-Id first (its place in every grammar) or nowhere.
            code, flags_length = (
                _AVP_HEADER.unpack_from(raw, HEADER_LENGTH) if len(raw) >= 28 else (0, 0)
            )
            if code == SESSION_ID and not flags_length >> 31:
                length = flags_length & 0xFFFFFF
                # Framed messages are whole 32-bit words: a Session-Id that fits, padded fits.
                if 8 <= length and HEADER_LENGTH + length <= len(raw):
                    cut = HEADER_LENGTH + ((length + 3) & ~3)
            elif raw.find(_SESSION_ID_CODE) < 0:
                cut = HEADER_LENGTH
        if cut:
            # The answer is a cached header start, the request's octets from its command code
            # to the end of the Session-Id (command, application, Hop-by-Hop and End-to-End
            # identifiers, Session-Id) and the constant block.
            key = cut | (raw[4] & FLAG_PROXIABLE) << 24
            head = self._heads.get(key)
            if head is None:
                head = bytes((1,)) + (cut + len(self._block)).to_bytes(3, "big")
                head += bytes(((raw[4] & FLAG_PROXIABLE) | FLAG_ERROR,))
                if len(self._heads) < _HEADS_SIZE:
                    self._heads[key] = head
            return b"".join((head, raw[5:cut], self._block))
        session = b""
        proxies: list[bytes] = []
        doic = False
        end = len(raw)
        offset = HEADER_LENGTH
        while offset + 8 <= end:
            code, flags_length = _AVP_HEADER.unpack_from(raw, offset)
            length = flags_length & 0xFFFFFF
            if length < 8 or offset + length > end:
                break
            padded = (length + 3) & ~3
            if not flags_length >> 31:  # vendor 0 only
                if code == SESSION_ID and not session:
                    session = raw[offset : offset + padded]
                elif code == PROXY_INFO:
                    proxies.append(raw[offset : offset + padded])
                elif code == OC_SUPPORTED_FEATURES:
                    doic = doic_trusted
            offset += padded
        body = b"".join((session, self._block, *proxies, self.doic_avps(now) if doic else b""))
        _, _, flags, command, _, hop_by_hop, end_to_end = _HEADER.unpack_from(raw)
        length = HEADER_LENGTH + len(body)
        header = _HEADER.pack(
            1,
            length.to_bytes(3, "big"),
            (flags & FLAG_PROXIABLE) | FLAG_ERROR,
            command,
            int.from_bytes(raw[8:12], "big"),
            hop_by_hop,
            end_to_end,
        )
        return header + body


def _by_demand(item: tuple[Hashable, int]) -> int:
    return item[1]


def append_avps(answer: bytes, avps: bytes) -> bytes:
    """An encoded message with encoded AVPs appended (Message Length fixed up)."""
    length = len(answer) + len(avps)
    return answer[:1] + length.to_bytes(3, "big") + answer[4:] + avps


# -- the reacting side (an MME or DRA that honours our reports; the simulator's --doic) ---------
OC_OLR, ORIGIN_HOST = 623, 264
OC_SEQUENCE_NUMBER, OC_VALIDITY_DURATION, OC_REDUCTION_PERCENTAGE = 624, 625, 627
OC_REPORT_TYPE = 626
# RFC 7683 §7.5: OC-Validity-Duration when absent (or past its maximum), and its maximum.
DEFAULT_VALIDITY = 30
MAX_VALIDITY = 86_400
# §5.2.1.3: a sequence number that went from within 1 % of its maximum to within 1 % of its
# minimum has rolled over (a newer report).
_SEQUENCE_ROLLOVER = (1 << 64) // 100


def _rolled_over(newest: int, sequence: int) -> bool:
    return newest >= (1 << 64) - _SEQUENCE_ROLLOVER and sequence < _SEQUENCE_ROLLOVER


@dataclass(frozen=True, slots=True)
class OverloadReport:
    """A host report in force at a reacting node (RFC 7683 §5.2.1.3)."""

    sequence_number: int
    reduction: int
    expires: float


class ReactingNode:
    """RFC 7683 reacting node with the loss algorithm (§6), host reports only: keeps the newest
    OC-OLR per reporting Origin-Host, drops it at its validity's end or when rescinded
    (OC-Validity-Duration 0), and abates that share of the requests meant for the host."""

    def __init__(self) -> None:
        self.reports: dict[str, OverloadReport] = {}
        # The newest sequence number seen per host, kept after a rescinding report too: an
        # older report that arrives later (over another connection) must not reinstate an
        # overload that has ended (§5.2.1.3). One integer per reporting host.
        self._newest: dict[str, int] = {}
        self.throttled = 0
        self._credit = 0

    def on_answer(self, raw: bytes, now: float) -> None:
        """Apply the host report of an answer: its top-level OC-OLRs, each processed (§5.2.1.3:
        an answer may carry several, of different report types)."""
        host: bytes | None = None
        olrs: list[bytes] = []
        end, offset = len(raw), HEADER_LENGTH
        while offset + 8 <= end:
            code, flags_length = _AVP_HEADER.unpack_from(raw, offset)
            length = flags_length & 0xFFFFFF
            if length < 8 or offset + length > end:
                return
            if not flags_length >> 31:
                if code == ORIGIN_HOST:
                    host = raw[offset + 8 : offset + length]
                elif code == OC_OLR:
                    olrs.append(raw[offset + 8 : offset + length])
            offset += (length + 3) & ~3
        if host is not None:
            key = host.decode("ascii", "replace").lower()
            for olr in olrs:
                self._apply(key, olr, now)

    def _apply(self, key: str, olr: bytes, now: float) -> None:
        values: dict[int, int] = {}
        for avp in decode_avps(olr, 0, len(olr))[0]:
            if not avp.vendor and len(avp.data) in (4, 8):
                values[avp.code] = int.from_bytes(avp.data, "big")
        sequence = values.get(OC_SEQUENCE_NUMBER)
        if sequence is None or values.get(OC_REPORT_TYPE) != OcReportType.HOST_REPORT:
            # §7.3: sequence number and report type are required; a realm report (§7.6)
            # concerns realm-routed requests, not this host.
            return
        reduction = values.get(OC_REDUCTION_PERCENTAGE, 0)
        if reduction > 100:
            return  # §7.7: values greater than 100 are ignored
        newest = self._newest.get(key)
        if newest is not None and sequence <= newest and not _rolled_over(newest, sequence):
            return  # §5.2.1.3: an old or repeated report changes nothing
        self._newest[key] = sequence
        validity = values.get(OC_VALIDITY_DURATION, DEFAULT_VALIDITY)
        if validity == 0:
            self.reports.pop(key, None)  # §5.2.1.3: the overload condition has ended
            return
        if validity > MAX_VALIDITY:
            validity = DEFAULT_VALIDITY  # §7.5: past the maximum, the default applies
        self.reports[key] = OverloadReport(sequence, reduction, now + validity)

    def admit(self, host: str, now: float) -> bool:
        """False for the report's share of the requests meant for ``host`` (evenly spread)."""
        report = self.reports.get(host.lower())
        if report is None:
            return True
        if now >= report.expires:
            del self.reports[host.lower()]
            return True
        credit = self._credit + report.reduction
        if credit >= 100:
            self._credit = credit - 100
            self.throttled += 1
            return False
        self._credit = credit
        return True
