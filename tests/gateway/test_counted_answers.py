"""A check waiting for the shared clone count is answered from the count's callback (no task):
whatever fails there, after the count, it is answered 5012 DIAMETER_UNABLE_TO_COMPLY on S13 and
500 SYSTEM_FAILURE on N5g-eir, as the same failure is on the synchronous and coroutine paths,
never left unanswered (the MME timing out, its place in flight kept)."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from diameter.codec import decode_message
from diameter.deferred import DeferredAnswer
from diameter.settings import LocalIdentity
from gateway.lists import OperatorLists
from gateway.n5g_eir.equipment_status import EquipmentIdentityCheck
from gateway.n5g_eir.problem import Response
from gateway.observations import ObservationLog
from gateway.redis_clone import SharedCloneTracker, SharedStateMetrics
from gateway.s13 import MeIdentityCheck
from tests.gateway.test_classify import KNOWN, lists, make
from tests.n5g_eir.test_equipment_status import IMSI, micr, path
from tests.redis_server import RedisServer, redis_server

__all__ = ["lists", "redis_server"]  # the fixtures


class _FailingLog(ObservationLog):
    """An observation log whose every record fails: a failure after the count."""

    def record(self, imei: str, imsi: str, now: float | None = None) -> bool:
        raise RuntimeError("observation log broken")


def _tracker(redis: RedisServer, prefix: str) -> SharedCloneTracker:
    return SharedCloneTracker(2, 3600.0, 1_000, redis.url,
                              SharedStateMetrics(CollectorRegistry()), key_prefix=prefix)


async def test_s13_answer_failing_after_the_shared_count_is_5012(
    lists: OperatorLists, redis_server: RedisServer, tmp_path: Path,
) -> None:
    tracker = _tracker(redis_server, "counted-s13")
    try:
        s13 = MeIdentityCheck(LocalIdentity(), make(lists, clone=tracker),
                              observations=_FailingLog(tmp_path / "observations.sqlite"))
        deferred = s13.handle(micr(KNOWN, "01", IMSI))
        assert isinstance(deferred, DeferredAnswer)
        given: list[DeferredAnswer] = []
        deferred.bind(given.append, "request")
        await tracker.flush()  # the count's round trip: its callback gives the answer
        assert given == [deferred]
        assert decode_message(deferred.answer).get("Result-Code") == 5012
    finally:
        await tracker.close()


async def test_n5g_eir_answer_failing_after_the_shared_count_is_500(
    lists: OperatorLists, redis_server: RedisServer, tmp_path: Path,
) -> None:
    tracker = _tracker(redis_server, "counted-n5g")
    try:
        check = EquipmentIdentityCheck(make(lists, clone=tracker),
                                       observations=_FailingLog(tmp_path / "observations.sqlite"))
        deferred = check.handle(b"GET", path(f"imeisv-{KNOWN}01", f"imsi-{IMSI}"))
        assert isinstance(deferred, DeferredAnswer)
        given: list[DeferredAnswer] = []
        deferred.bind(given.append, 1)
        await tracker.flush()
        assert given == [deferred] and isinstance(deferred.answer, Response)
        assert deferred.answer.status == 500
        assert json.loads(deferred.answer.body)["cause"] == "SYSTEM_FAILURE"
        assert check.in_flight == 0
    finally:
        await tracker.close()
