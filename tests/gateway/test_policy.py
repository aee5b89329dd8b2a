"""DESIGN.md §4 policy table, precedence, unknown_equipment, monitor mode."""

from __future__ import annotations

import pytest

from gateway.policy import DEFAULT_STATUS, EquipmentStatus, Policy, Reason

W, B, G = EquipmentStatus.WHITELISTED, EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED


def test_wire_values() -> None:
    # TS 29.272 §7.3.51
    assert (W.value, B.value, G.value) == (0, 1, 2)


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason.WHITELISTED, W), (Reason.BLACKLISTED, B), (Reason.GREYLISTED, G),
        (Reason.MALFORMED, B), (Reason.BAD_CHECK_DIGIT, B), (Reason.NULL_OR_TEST, G),
        (Reason.TAC_UNKNOWN, G), (Reason.CLONE_SUSPECTED, G),
        (Reason.REGISTRY_NOT_MANUFACTURED, B), (Reason.REGISTRY_REPORTED, B),
        (Reason.REGISTRY_UNKNOWN, W), (Reason.REGISTRY_UNAVAILABLE, W), (Reason.CLEAN, W),
    ],
)
def test_default_table(reason: Reason, status: EquipmentStatus) -> None:
    assert DEFAULT_STATUS[reason] is status
    outcome = Policy().decide([reason])
    assert outcome.status is status and outcome.decisive is reason


def test_every_reason_has_a_default() -> None:
    assert set(DEFAULT_STATUS) == set(Reason)


def test_whitelist_wins_over_everything() -> None:
    everything = list(Reason)
    assert Policy().decide(everything).status is W
    assert Policy().decide(everything).decisive is Reason.WHITELISTED
    # even when the operator maps whitelisted to something else, it stays decisive
    policy = Policy.build({Reason.WHITELISTED: G})
    assert policy.decide(everything).status is G


def test_first_decisive_reason_sets_status() -> None:
    p = Policy()
    assert p.decide([Reason.GREYLISTED, Reason.MALFORMED]).status is G
    assert p.decide([Reason.TAC_UNKNOWN, Reason.REGISTRY_NOT_MANUFACTURED]).status is G
    # registry_unknown (WHITELISTED) is not decisive: a later blacklisting reason still counts
    assert p.decide([Reason.REGISTRY_UNKNOWN, Reason.REGISTRY_REPORTED]).status is B
    # nothing decisive: the first reason stands
    out = p.decide([Reason.REGISTRY_UNAVAILABLE])
    assert out.status is W and out.decisive is Reason.REGISTRY_UNAVAILABLE


def test_override_makes_reason_non_decisive() -> None:
    p = Policy.build({Reason.TAC_UNKNOWN: W})
    assert p.decide([Reason.TAC_UNKNOWN, Reason.REGISTRY_REPORTED]).decisive is (
        Reason.REGISTRY_REPORTED
    )


def test_unknown_equipment() -> None:
    p = Policy.build(unknown_equipment=[Reason.TAC_UNKNOWN])
    out = p.decide([Reason.TAC_UNKNOWN])
    assert out.status is None and out.enforcement is None
    assert Policy().decide([Reason.TAC_UNKNOWN]).status is G


def test_monitor_mode() -> None:
    p = Policy.build(monitor_mode=True, unknown_equipment=[Reason.MALFORMED])
    out = p.decide([Reason.BLACKLISTED])
    assert out.status is W and out.enforcement is B and out.monitor_mode
    out = p.decide([Reason.MALFORMED])
    assert out.status is W and out.enforcement is None
