"""The classifier's decision cache: reuse for identical checks, and every way it must not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify import Classifier, Decision, Pending
from gateway.clone_tracker import CloneTracker
from gateway.lists import ListStore, OperatorLists, make_entry
from gateway.policy import EquipmentStatus, Policy, Reason
from registry_client.model import RegistryStatus, Report, ReportType
from tests.gateway.test_classify import KNOWN, TACS, FakeRegistry, verdict

W, B, G = EquipmentStatus.WHITELISTED, EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED


@pytest.fixture
def lists(tmp_path: Path) -> OperatorLists:
    ol = OperatorLists(ListStore(tmp_path / "lists.sqlite"))
    ol.reload()
    return ol


def sync(c: Classifier, imei: str, imsi: str | None = None, sv: str | None = None) -> Decision:
    d = c.classify_sync(imei, imsi, sv)
    assert isinstance(d, Decision)
    return d


def test_identical_check_reuses_the_decision(lists: OperatorLists) -> None:
    c = Classifier(Policy(), TACS, lists)
    first = sync(c, KNOWN, "001010000000001", "07")
    assert sync(c, KNOWN, "001010000000001", "07") is first
    assert c.decision_cache_hits == 1
    # Another Software-Version, IMSI or IMEI text is another check.
    assert sync(c, KNOWN, "001010000000001", "08") is not first
    assert sync(c, KNOWN, "001010000000002", "07") is not first
    assert sync(c, KNOWN + "8", "001010000000001", "07") is not first
    assert c.decision_cache_hits == 1 and c.decision_cache_len == 4


def test_list_change_and_policy_swap_invalidate(lists: OperatorLists) -> None:
    c = Classifier(Policy(), TACS, lists)
    assert sync(c, KNOWN).status is W
    assert lists.store is not None
    lists.store.add(make_entry("grey", "imei", KNOWN))
    assert lists.poll()
    assert sync(c, KNOWN).status is G
    c.reload(Policy.build({Reason.GREYLISTED: B}))
    assert sync(c, KNOWN).status is B
    assert c.decision_cache_hits == 0


def test_registry_verdict_change_invalidates(lists: OperatorLists) -> None:
    reg = FakeRegistry()
    c = Classifier(Policy(), TACS, lists, reg)
    reg.cache[KNOWN] = verdict(RegistryStatus.MANUFACTURED)
    clean = sync(c, KNOWN)
    assert clean.status is W and sync(c, KNOWN) is clean
    # A newer verdict (refetched, or the record changed): decided again.
    reg.cache[KNOWN] = verdict(RegistryStatus.MANUFACTURED, Report(KNOWN, ReportType.STOLEN, "FR"))
    d = sync(c, KNOWN)
    assert d.status is B and d.decisive is Reason.REGISTRY_REPORTED
    # The verdict left the registry cache (expired): the registry is asked again, not skipped.
    del reg.cache[KNOWN]
    assert isinstance(c.classify_sync(KNOWN), Pending)


def test_decided_before_the_registry_does_not_depend_on_it(lists: OperatorLists) -> None:
    reg = FakeRegistry()
    c = Classifier(Policy(), TACS, lists, reg)
    d = sync(c, "3520990017614X")  # malformed: decisive, registry never consulted
    assert d.registry is None and sync(c, "3520990017614X") is d


def test_full_classification_and_clone_detection_bypass_it(lists: OperatorLists) -> None:
    c = Classifier(Policy(), TACS, lists, clone=CloneTracker(threshold=1, window=3600))
    for _ in range(3):
        sync(c, KNOWN, "001010000000001")
    d = sync(c, KNOWN, "001010000000002")  # the tracker saw every check: 2 IMSIs > 1
    assert d.decisive is Reason.CLONE_SUSPECTED
    assert c.decision_cache_hits == 0
    plain = Classifier(Policy(), TACS, lists)
    sync(plain, KNOWN)
    assert plain.classify_sync(KNOWN, full=True) is not plain.classify_sync(KNOWN, full=True)
    assert plain.decision_cache_hits == 0


def test_bounded_and_can_be_turned_off(lists: OperatorLists) -> None:
    c = Classifier(Policy(), TACS, lists, decision_cache_size=2)
    first = sync(c, KNOWN)
    sync(c, "35209900176155")
    sync(c, "35209900176163")  # the oldest (KNOWN) goes
    assert c.decision_cache_len == 2
    assert sync(c, KNOWN) is not first
    off = Classifier(Policy(), TACS, lists, decision_cache_size=0)
    assert sync(off, KNOWN) is not sync(off, KNOWN)
    assert off.decision_cache_len == 0 and off.decision_cache_hits == 0


IMEIS = st.sampled_from([KNOWN, "35209900176155", "35332011905000", "11111111111111", "352099"])
IMSIS = st.sampled_from([None, "001010000000001", "001010000000002"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("check"), IMEIS, IMSIS),
        st.tuples(st.just("list"), IMEIS, st.sampled_from(["black", "grey", "white"])),
        st.tuples(st.just("policy"), st.sampled_from([W, B, G]), st.none()),
        st.tuples(st.just("verdict"), IMEIS, st.sampled_from(list(RegistryStatus))),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_same_decisions_as_without_the_cache(tmp_path_factory: pytest.TempPathFactory,
                                             steps: list[tuple[str, Any, Any]]) -> None:
    """Differential: whatever changes between checks, the cache never changes an answer."""
    store = ListStore(tmp_path_factory.mktemp("lists") / "lists.sqlite")
    ol = OperatorLists(store)
    ol.reload()
    reg = FakeRegistry()
    cached = Classifier(Policy(), TACS, ol, reg, decision_cache_size=3)
    fresh = Classifier(Policy(), TACS, ol, reg, decision_cache_size=0)
    for kind, a, b in steps:
        if kind == "check":
            got, want = cached.classify_sync(a, b), fresh.classify_sync(a, b)
            assert type(got) is type(want)
            if isinstance(got, Decision) and isinstance(want, Decision):
                assert (got.status, got.enforcement, got.reasons) == (
                    want.status, want.enforcement, want.reasons
                )
        elif kind == "list":
            store.add(make_entry(b, "imei", str(a)[:14].ljust(14, "0")))
            ol.poll()
        elif kind == "policy":
            policy = Policy.build({Reason.CLEAN: a})
            cached.reload(policy)
            fresh.reload(policy)
        else:
            reg.cache[str(a)] = verdict(b)
    store.close()
