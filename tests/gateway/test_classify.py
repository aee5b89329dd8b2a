"""The pipeline: every reason of DESIGN.md §4, sync/async paths, registry slot and budget."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.classify import (
    RESULT_EQUIPMENT_UNKNOWN,
    RESULT_SUCCESS,
    Classifier,
    Decision,
    Pending,
)
from gateway.clone_tracker import CloneTracker
from gateway.config import load_config
from gateway.lists import ListStore, OperatorLists, make_entry
from gateway.policy import EquipmentStatus, Policy, Reason
from gateway.redis_clone import SharedCloneTracker, SharedStateMetrics
from gateway.shared_count import SharedCount
from gateway.tac import TacDatabase
from registry_client.model import (
    RegistryStatus,
    RegistryUnavailable,
    RegistryVerdict,
    Report,
    ReportType,
    VerdictOrigin,
)
from tests.redis_server import RedisServer, redis_server

W, B, G = EquipmentStatus.WHITELISTED, EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED
__all__ = ["redis_server"]  # the fixture

KNOWN = "35209900176148"  # TAC in the table below, on no list


class FakeRegistry:
    """A VerdictSource with a cache dict and a scripted online answer."""

    def __init__(self, online: RegistryVerdict | Exception | None = None, delay: float = 0.0):
        self.cache: dict[str, RegistryVerdict] = {}
        self.online = online
        self.delay = delay
        self.checks = 0

    def cached(self, imei: str) -> RegistryVerdict | None:
        return self.cache.get(imei)

    async def check(self, imei: str) -> RegistryVerdict:
        self.checks += 1
        await asyncio.sleep(self.delay)
        if isinstance(self.online, Exception):
            raise self.online
        assert self.online is not None
        return self.online

    async def close(self) -> None:
        pass


def verdict(status: RegistryStatus, *reports: Report, fetched_at: float = 0.0) -> RegistryVerdict:
    return RegistryVerdict(KNOWN, KNOWN[:8], status, "Ex", "declared_range", reports,
                           VerdictOrigin.CACHE, fetched_at)


@pytest.fixture
def lists(tmp_path: Path) -> OperatorLists:
    store = ListStore(tmp_path / "lists.sqlite")
    store.add_many([
        make_entry("black", "imei", "35693803564380", reason="stolen"),
        make_entry("grey", "range", "35332011900000-35332011909999", reason="batch"),
        make_entry("white", "pair", "01234500000017", "001010000000001", reason="lab"),
        make_entry("white", "imei", "49015420323751", reason="exception"),
        make_entry("black", "imei", "49015420323751", reason="also black"),
    ])
    ol = OperatorLists(store)
    ol.reload()
    return ol


TACS = TacDatabase.from_records({
    t: ("Ex", "M") for t in (35209900, 35332011, 1234500, 49015420, 35693803, 86000001)
})


def make(lists: OperatorLists, policy: Policy | None = None, **kw: object) -> Classifier:
    return Classifier(policy or Policy(), TACS, lists, **kw)  # type: ignore[arg-type]


def sync(c: Classifier, imei: str, imsi: str | None = None, sv: str | None = None) -> Decision:
    d = c.classify_sync(imei, imsi, sv)
    assert isinstance(d, Decision)
    return d


@pytest.mark.parametrize(
    ("imei", "imsi", "status", "reason"),
    [
        (KNOWN, None, W, Reason.CLEAN),
        ("352099001761481", None, W, Reason.CLEAN),
        ("3520990017614805", None, W, Reason.CLEAN),
        ("352099001761489", None, B, Reason.BAD_CHECK_DIGIT),
        ("3520990017614", None, B, Reason.MALFORMED),
        ("3520990017614X", None, B, Reason.MALFORMED),
        ("00000000000000", None, G, Reason.NULL_OR_TEST),
        ("02123456123456", None, G, Reason.NULL_OR_TEST),
        ("11111111111111", None, G, Reason.TAC_UNKNOWN),
        ("35693803564380", None, B, Reason.BLACKLISTED),
        ("35332011905000", None, G, Reason.GREYLISTED),
        ("01234500000017", "001010000000001", W, Reason.WHITELISTED),
        ("01234500000017", None, W, Reason.CLEAN),
        ("49015420323751", None, W, Reason.WHITELISTED),  # white and black: white wins
    ],
)
def test_reasons_and_statuses(
    lists: OperatorLists, imei: str, imsi: str | None, status: EquipmentStatus, reason: Reason
) -> None:
    d = sync(make(lists), imei, imsi)
    assert d.status is status and d.enforcement is status
    assert d.decisive is reason and d.reasons[0] is reason
    assert d.result_code == RESULT_SUCCESS


def test_whitelist_wins_and_all_reasons_kept(lists: OperatorLists) -> None:
    d = sync(make(lists), "490154203237510")  # wrong check digit, white and black
    assert d.status is W
    assert d.reasons == (Reason.WHITELISTED, Reason.BLACKLISTED, Reason.BAD_CHECK_DIGIT)
    assert d.findings[0].detail == "imei 49015420323751"  # exact IMEI reasons stay in SQLite
    assert [lists.describe(m).reason for m in d.list_matches] == ["exception", "also black"]


def test_svn_carried(lists: OperatorLists) -> None:
    d = sync(make(lists), KNOWN, sv="07")
    assert d.imei is not None and d.imei.imeisv == KNOWN + "07"


def test_unknown_equipment_and_monitor_mode(lists: OperatorLists) -> None:
    c = make(lists, Policy.build(unknown_equipment=[Reason.TAC_UNKNOWN]))
    d = sync(c, "11111111111111")
    assert d.status is None and d.equipment_unknown and d.result_code == RESULT_EQUIPMENT_UNKNOWN
    m = make(lists, Policy.build(monitor_mode=True))
    d = sync(m, "35693803564380")
    assert d.status is W and d.enforcement is B and d.monitor_mode


def test_list_change_picked_up_by_poll(lists: OperatorLists) -> None:
    c = make(lists)
    assert sync(c, KNOWN).status is W
    assert lists.store is not None
    lists.store.add(make_entry("black", "imei", KNOWN, reason="new"))
    assert lists.poll()
    assert sync(c, KNOWN).status is B


def test_clone_suspected(lists: OperatorLists) -> None:
    c = make(lists, clone=CloneTracker(threshold=2, window=3600))
    for i in range(2):
        assert sync(c, KNOWN, f"00101000000000{i}").status is W
    d = sync(c, KNOWN, "001010000000009")
    assert d.status is G and d.decisive is Reason.CLONE_SUSPECTED
    assert sync(c, "35209900176155", "001010000000009").status is W  # another IMEI


def test_empty_tac_table_means_no_tac_check(lists: OperatorLists) -> None:
    c = Classifier(Policy(), TacDatabase.from_records({}), lists)
    assert sync(c, "11111111111111").status is W


# --- registry slot ---------------------------------------------------------------------------


def test_cache_hit_answers_synchronously(lists: OperatorLists) -> None:
    reg = FakeRegistry()
    reg.cache[KNOWN] = verdict(
        RegistryStatus.MANUFACTURED,
        Report(KNOWN, ReportType.STOLEN, "FR"),
        fetched_at=time.time() - 5,
    )
    d = sync(make(lists, registry=reg), KNOWN)
    assert d.status is B and d.decisive is Reason.REGISTRY_REPORTED
    assert "stolen in FR" in d.findings[0].detail
    assert d.registry_origin is VerdictOrigin.CACHE
    assert d.registry_age is not None and 4 < d.registry_age < 60
    assert reg.checks == 0


@pytest.mark.parametrize(
    ("v", "status", "reason"),
    [
        (verdict(RegistryStatus.NOT_MANUFACTURED), B, Reason.REGISTRY_NOT_MANUFACTURED),
        (verdict(RegistryStatus.UNKNOWN), W, Reason.REGISTRY_UNKNOWN),
        (verdict(RegistryStatus.MANUFACTURED), W, Reason.CLEAN),
        (verdict(RegistryStatus.MANUFACTURED,
                 Report(KNOWN, ReportType.LOST, "DE", withdrawn=True)), W, Reason.CLEAN),
    ],
)
async def test_registry_verdicts(
    lists: OperatorLists, v: RegistryVerdict, status: EquipmentStatus, reason: Reason
) -> None:
    reg = FakeRegistry(online=v)
    c = make(lists, registry=reg)
    assert isinstance(c.classify_sync(KNOWN), Pending)
    d = await c.classify(KNOWN)
    assert d.status is status and d.decisive is reason and d.registry is v
    assert reg.checks == 1  # classify_sync only reports Pending; classify awaits check()


async def test_registry_timeout_and_unavailable_fail_open(lists: OperatorLists) -> None:
    slow = make(lists, registry=FakeRegistry(verdict(RegistryStatus.NOT_MANUFACTURED), 1.0),
                budget=0.01)
    started = time.monotonic()
    d = await slow.classify(KNOWN)
    assert time.monotonic() - started < 0.5
    assert d.status is W and d.decisive is Reason.REGISTRY_UNAVAILABLE and d.registry is None
    down = make(lists, registry=FakeRegistry(RegistryUnavailable("breaker open")))
    d = await down.classify(KNOWN)
    assert d.decisive is Reason.REGISTRY_UNAVAILABLE and "breaker open" in d.findings[0].detail
    strict = make(lists, Policy.build({Reason.REGISTRY_UNAVAILABLE: G}),
                  registry=FakeRegistry(RegistryUnavailable()))
    assert (await strict.classify(KNOWN)).status is G


async def test_registry_skipped_when_already_decided_unless_full(lists: OperatorLists) -> None:
    reg = FakeRegistry(online=verdict(RegistryStatus.UNKNOWN))
    c = make(lists, registry=reg)
    d = await c.classify("35693803564380")
    assert d.status is B and reg.checks == 0 and d.registry is None
    d = await c.classify("35693803564380", full=True)
    assert reg.checks == 1 and d.reasons == (Reason.BLACKLISTED, Reason.REGISTRY_UNKNOWN)


@pytest.mark.parametrize("cached", [verdict(RegistryStatus.MANUFACTURED),
                                    verdict(RegistryStatus.NOT_MANUFACTURED), None])
@pytest.mark.parametrize("n", [1, 3])
async def test_shared_count_decides_as_the_coroutine_does(
    lists: OperatorLists, redis_server: RedisServer, cached: RegistryVerdict | None, n: int
) -> None:
    # A check waiting for the shared clone count with its registry verdict cached is decided
    # from the count's callback (decide_counted): as resolve() decides it, and the registry
    # asked nothing; without the cached verdict, resolve() asks the registry after the count.
    # The count is a real one: another gateway's sightings of the IMEI in the same Redis.
    decisions = []
    for path in ("callback", "coroutine"):
        reg = FakeRegistry(online=verdict(RegistryStatus.UNKNOWN))
        if cached is not None:
            reg.cache[KNOWN] = cached
        prefix = f"classify-{n}-{path}-{id(reg)}"
        tracker, other = (
            # A budget past any pause of a loaded machine: the first round trip connects and
            # loads the script, and past the default 50 ms the count settles 0 (not in time).
            SharedCloneTracker(2, 3600.0, 1_000, redis_server.url,
                               SharedStateMetrics(CollectorRegistry()), key_prefix=prefix,
                               budget=5.0)
            for _ in range(2)
        )
        for i in range(n - 1):
            other.suspected(KNOWN, f"00101000000009{i}", time.time())
        await other.flush()
        c = make(lists, registry=reg, clone=tracker)
        pending = c.classify_sync(KNOWN, "001010000000001")
        count = tracker.shared_count(KNOWN)
        assert isinstance(pending, Pending) and pending.clone_count is count is not None
        assert c.counted(pending) is (cached is not None)
        await tracker.flush()
        assert count.value == n
        if path == "callback" and cached is not None:
            decision = c.decide_counted(pending, n)
            assert decision is not None
        else:
            decision = await c.resolve(pending)
        decisions.append(decision)
        await tracker.close()
        await other.close()
        # The registry is asked only when nothing was cached and the count did not decide.
        assert reg.checks == (1 if cached is None and n <= 2 else 0)
    a, b = decisions
    assert (a.status, a.reasons, a.registry) == (b.status, b.reasons, b.registry)
    if n > 2:
        assert a.decisive is Reason.CLONE_SUSPECTED and a.registry is None
    else:
        assert a.registry is not None and (cached is None or a.registry is cached)


async def test_unexpected_registry_error_propagates(lists: OperatorLists) -> None:
    # Not a RegistryUnavailable: the S13 handler answers 5012, it is not silently whitelisted.
    c = make(lists, registry=FakeRegistry(RuntimeError("bug")))
    with pytest.raises(RuntimeError):
        await c.classify(KNOWN)


def test_from_config_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = Classifier.from_config(load_config(None))
    assert sync(c, "35693803564380").status is B  # config/lists-sample.csv
    assert sync(c, "35209900176148").status is W  # config/tac-sample.txt
    assert sync(c, "35777999000000").decisive is Reason.TAC_UNKNOWN
    assert (tmp_path / "var" / "tac.sqlite").exists()
    assert c.lists.store is not None
    c.lists.store.close()


def test_log_fields_mask_imsi(lists: OperatorLists) -> None:
    d = sync(make(lists), "01234500000017", "001010000000001")
    fields = d.log_fields()
    assert fields["imsi"] == "00101**********" and fields["status"] == "WHITELISTED"
    assert fields["reasons"] == ["whitelisted"] and fields["result_code"] == RESULT_SUCCESS
    assert d.log_fields(mask=False)["imsi"] == "001010000000001"


def test_reload_swaps_policy_and_lists(lists: OperatorLists) -> None:
    c = make(lists)
    assert lists.store is not None
    lists.store.add(make_entry("grey", "imei", KNOWN))
    c.reload(Policy.build({Reason.GREYLISTED: B}))
    assert sync(c, KNOWN).status is B


async def test_a_shared_count_calls_back_once_in_the_settling_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = SharedCount()
    seen: list[tuple[str, int]] = []
    count.add_callback(lambda n: seen.append(("first", n)))

    def failing(n: int) -> None:
        raise RuntimeError("one check's answer failed")

    count.add_callback(failing)
    count.add_callback(lambda n: seen.append(("third", n)))
    waiter = asyncio.ensure_future(count.wait())
    await asyncio.sleep(0)
    count.settle(3)
    # Within settle(): no event loop round per callback; one failure spares the others.
    assert seen == [("first", 3), ("third", 3)]
    assert "failed" in caplog.text
    count.settle(0)  # settled once: the budget timer firing late changes nothing
    count.add_callback(lambda n: seen.append(("late", n)))
    assert seen[-1] == ("late", 3)
    assert await waiter == 3 and await count.wait() == 3
