"""Real traffic for bench/e2e.py: a GSMA-size TAC file, registry declarations, operator lists and
a million distinct handsets, each with an IMSI and a Software-Version, generated from a seed.

What the files hold (``write_files``):

* ``tacs.txt``: ``tacs`` TACs (default 100,000, about the GSMA database) in the 17-column GSMA
  pipe layout, reporting bodies 35, 86, 01 and 49 (never a test body, TS.06 Appendix A).
* ``registry.json``: 30 % of the TACs declared by a participating owner (one or two serial
  ranges), 5 % by a non-participating one; reports (stolen, and withdrawn ones) on the
  handsets of the ``reported`` and ``withdrawn`` categories.
* ``lists.csv``: a barred TAC, a greylisted range, black-listed IMEIs and white-listed
  IMEI+IMSI pairs, each on TACs of their own that no other category uses.

The handsets (``RealTraffic``, a ``Sequence[Check]`` built on demand from compact arrays, so a
million of them cost ~20 MB): every IMEI distinct, half sent with their check digit; IMSI
``00101`` + 10 digits, distinct per handset; Software-Version 2 digits. Each category knows the
reasons the gateway finds (gateway.classify order) and so, through the policy, its answer.
"""

from __future__ import annotations

import copy
import json
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from gateway.imei import luhn_check_digit
from gateway.policy import Policy, Reason
from gateway.simulator.traffic import OUTCOME_UNKNOWN, Check

# category -> (weight per mille, the reasons the gateway finds, in precedence order)
CATEGORIES: dict[str, tuple[int, tuple[Reason, ...]]] = {
    "manufactured": (445, ()),  # declared range: clean
    "undeclared": (300, (Reason.REGISTRY_UNKNOWN,)),
    "not_participating": (40, (Reason.REGISTRY_UNKNOWN,)),
    "not_manufactured": (60, (Reason.REGISTRY_NOT_MANUFACTURED,)),
    "reported": (20, (Reason.REGISTRY_REPORTED,)),
    "withdrawn": (5, ()),  # a withdrawn report counts for nothing
    "unknown_tac": (80, (Reason.TAC_UNKNOWN, Reason.REGISTRY_UNKNOWN)),
    "black_tac": (10, (Reason.BLACKLISTED,)),
    "grey_range": (10, (Reason.GREYLISTED, Reason.REGISTRY_UNKNOWN)),
    "black_imei": (5, (Reason.BLACKLISTED,)),
    "white_pair": (5, (Reason.WHITELISTED,)),
    "bad_check_digit": (15, (Reason.BAD_CHECK_DIGIT, Reason.REGISTRY_UNKNOWN)),
    "malformed": (5, (Reason.MALFORMED,)),
}
NAMES = tuple(CATEGORIES)
_GSMA_HEADER = (
    "TAC|Marketing Name|Internal Model Name|Manufacturer|Bands|Allocation Date|Country Code|"
    "Fixed Code|Manufacturer Code|Radio Interface|Brand Name|Model Name|Operating System|NFC|"
    "Bluetooth|WLAN|Device Type"
)
_RANGES = ((0, 699_999),), ((0, 399_999), (500_000, 799_999))
_LISTED_TACS = 4  # black TAC, grey range, black IMEIs, white pairs
_SVS = tuple(f"{n:02d}" for n in range(100))  # handset i's Software-Version: i % 100


@dataclass(slots=True)
class _Plan:
    tacs: list[int]
    participating: list[int]
    not_participating: list[int]
    undeclared: list[int]
    listed: list[int]  # black TAC, grey range TAC, black IMEI TAC, white pair TAC


def _plan(rng: random.Random, n_tacs: int) -> _Plan:
    pool: set[int] = set()
    for body, share in ((35, 0.6), (86, 0.3), (1, 0.05), (49, 0.05)):
        want = len(pool) + max(1, int(n_tacs * share))
        while len(pool) < min(want, n_tacs):
            pool.add(body * 1_000_000 + rng.randrange(1_000_000))
    while len(pool) < n_tacs:
        pool.add(35 * 1_000_000 + rng.randrange(1_000_000))
    tacs = sorted(pool)
    shuffled = tacs[:]
    rng.shuffle(shuffled)
    listed, rest = shuffled[:_LISTED_TACS], shuffled[_LISTED_TACS:]
    n_part, n_quiet = int(len(rest) * 0.30), int(len(rest) * 0.05)
    return _Plan(
        tacs,
        rest[:n_part],
        rest[n_part : n_part + n_quiet],
        rest[n_part + n_quiet :],
        listed,
    )


class RealTraffic(Sequence[Check]):
    """``count`` distinct handsets; ``write_files`` must have been given the same seed."""

    def __init__(self, policy: Policy, plan: _Plan, count: int, seed: int) -> None:
        rng = random.Random(seed + 1)
        self.total = count
        self.offset = 0  # item i is handset offset + i (see shifted)
        self.length = count
        self.bodies = array("q")
        self.kinds = array("B")
        self.imsis: dict[int, str] = {}  # white pairs carry the listed IMSI
        self.reported: list[int] = []
        self.withdrawn: list[int] = []
        self.black_imeis: list[int] = []
        self.white_pairs: list[tuple[int, str]] = []
        self.expected = [_outcome(policy, CATEGORIES[n][1]) for n in NAMES]
        unknown = _unknown_tacs(rng, set(plan.tacs), 2_000)
        seen: set[int] = set()
        weights = [CATEGORIES[n][0] for n in NAMES]
        kinds = rng.choices(range(len(NAMES)), weights, k=count)
        black_tac, grey_tac, black_imei_tac, white_tac = plan.listed
        for i, kind in enumerate(kinds):
            name = NAMES[kind]
            while True:
                if name in ("manufactured", "reported", "withdrawn"):
                    tac = rng.choice(plan.participating)
                    ranges = _RANGES[tac % 2]
                    first, last = ranges[rng.randrange(len(ranges))]
                    snr = rng.randint(first, last)
                elif name == "not_manufactured":
                    tac = rng.choice(plan.participating)
                    snr = rng.randint(800_000, 999_999)  # above every declared range
                elif name in ("undeclared", "bad_check_digit"):
                    tac, snr = rng.choice(plan.undeclared), rng.randrange(1_000_000)
                elif name == "not_participating":
                    tac, snr = rng.choice(plan.not_participating), rng.randrange(1_000_000)
                elif name == "unknown_tac":
                    tac, snr = rng.choice(unknown), rng.randrange(1_000_000)
                elif name == "black_tac":
                    tac, snr = black_tac, rng.randrange(1_000_000)
                elif name == "grey_range":
                    tac, snr = grey_tac, rng.randrange(100_000)
                elif name == "black_imei":
                    tac, snr = black_imei_tac, rng.randrange(1_000_000)
                elif name == "white_pair":
                    tac, snr = white_tac, rng.randrange(1_000_000)
                else:  # malformed: the index alone makes its text
                    body = -1 - i
                    break
                body = tac * 1_000_000 + snr
                if body not in seen:
                    seen.add(body)
                    break
            self.bodies.append(body)
            self.kinds.append(kind)
            if name == "reported":
                self.reported.append(body)
            elif name == "withdrawn":
                self.withdrawn.append(body)
            elif name == "black_imei":
                self.black_imeis.append(body)
            elif name == "white_pair":
                imsi = self._imsi(i)
                self.imsis[i] = imsi
                self.white_pairs.append((body, imsi))

    def shifted(self, start: int, length: int | None = None) -> RealTraffic:
        """The same handsets seen from ``start`` (wrapping), ``length`` of them (default all)."""
        view = copy.copy(self)
        view.offset = (self.offset + start) % self.total if self.total else 0
        view.length = self.length if length is None else length
        return view

    @staticmethod
    def _imsi(i: int) -> str:
        # 7,919 is prime to 10**10: distinct for every index below 10**10 (__getitem__ inlines
        # it).
        return f"00101{(i * 7_919 + 12_345) % 10**10:010d}"

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Check: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Check]: ...
    def __getitem__(self, index: int | slice) -> Check | Sequence[Check]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        index = (self.offset + index) % self.total
        body = self.bodies[index]
        kind = self.kinds[index]
        name = NAMES[kind]
        # The simulator asks for one a request: what _imsi() and f"{index % 100:02d}" give,
        # without their calls.
        imsi = self.imsis.get(index) or f"00101{(index * 7_919 + 12_345) % 10**10:010d}"
        if body < 0:
            imei = f"{index % 10**13:013d}"  # 13 digits: malformed (TS 23.003 §6.2.1)
        else:
            text = f"{body:014d}"
            if name == "bad_check_digit":
                imei = text + str((int(luhn_check_digit(text)) + 1 + index % 9) % 10)
            elif index % 2:
                imei = text + luhn_check_digit(text)
            else:
                imei = text
        return Check(imei, imsi, _SVS[index % 100], self.expected[kind], name)

    def files(self, plan: _Plan, directory: Path) -> dict[str, Path]:
        """Write the TAC file, the registry declarations and the lists; their paths by name."""
        directory.mkdir(parents=True, exist_ok=True)
        tac_file = directory / "tacs.txt"
        with tac_file.open("w", encoding="utf-8") as out:
            out.write(_GSMA_HEADER + "\n")
            for tac in plan.tacs:
                out.write(
                    f"{tac:08d}|Model {tac % 977}|M-{tac % 977}|Maker {tac % 311}|GSM 900|"
                    f"01-Jan-2024|826|NA|M{tac % 311}|NONE|Brand|Model {tac % 977}|Android|Y|Y|Y|"
                    "Smartphone\n"
                )
        declarations: list[dict[str, object]] = []
        for tac in plan.participating:
            declarations.append(
                {
                    "tac": f"{tac:08d}",
                    "manufacturer": f"Maker {tac % 311}",
                    "participating": True,
                    "ranges": [
                        {"first": f"{a:06d}", "last": f"{b:06d}"} for a, b in _RANGES[tac % 2]
                    ],
                }
            )
        for tac in plan.not_participating:
            declarations.append(
                {"tac": f"{tac:08d}", "manufacturer": f"Maker {tac % 311}", "participating": False}
            )
        reports = [
            {"imei": f"{b:014d}", "type": "stolen", "country": "FR", "since": "2026-01-01"}
            for b in self.reported
        ] + [
            {"imei": f"{b:014d}", "type": "lost", "country": "DE", "withdrawn": True}
            for b in self.withdrawn
        ]
        registry_file = directory / "registry.json"
        registry_file.write_text(json.dumps({"tacs": declarations, "reports": reports}))
        black_tac, grey_tac, _, _ = plan.listed
        lines = ["list,kind,value,imsi,reason"]
        lines.append(f"black,tac,{black_tac:08d},,barred TAC")
        lines.append(f"grey,range,{grey_tac:08d}000000-{grey_tac:08d}099999,,under observation")
        lines += [f"black,imei,{b:014d},,stolen" for b in self.black_imeis]
        lines += [f"white,pair,{b:014d},{imsi},lab device" for b, imsi in self.white_pairs]
        lists_file = directory / "lists.csv"
        lists_file.write_text("\n".join(lines) + "\n")
        return {"tac": tac_file, "registry": registry_file, "lists": lists_file}


def _unknown_tacs(rng: random.Random, known: set[int], n: int) -> list[int]:
    out: set[int] = set()
    while len(out) < n:
        tac = rng.randint(10, 99) * 1_000_000 + rng.randrange(1_000_000)
        if tac not in known:
            out.add(tac)
    return sorted(out)


def _outcome(policy: Policy, reasons: tuple[Reason, ...]) -> str:
    status = policy.decide(list(reasons) or [Reason.CLEAN]).status
    return OUTCOME_UNKNOWN if status is None else status.name


def generate(
    policy: Policy, directory: Path, count: int = 1_000_000, tacs: int = 100_000, seed: int = 1
) -> tuple[RealTraffic, dict[str, Path]]:
    """The handsets and the data files (written into ``directory``) they are checked against."""
    plan = _plan(random.Random(seed), tacs)
    traffic = RealTraffic(policy, plan, count, seed)
    return traffic, traffic.files(plan, directory)
