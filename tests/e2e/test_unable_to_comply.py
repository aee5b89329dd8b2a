"""A check whose classification cannot finish answers 5012 DIAMETER_UNABLE_TO_COMPLY (never a 2001
without Equipment-Status), keeps the connection, and is counted in eir_checks_total."""

from __future__ import annotations

import pytest

from registry_client.model import RegistryVerdict
from tests.e2e.conftest import StartGateway, connect_mme, metric_value, scrape


class BrokenStore:
    """A registry slot whose store is down in a way the client did not foresee."""

    def __init__(self, fail_sync: bool) -> None:
        self.fail_sync = fail_sync

    def cached(self, imei: str) -> RegistryVerdict | None:
        if self.fail_sync:
            raise OSError("disk I/O error")
        return None

    async def check(self, imei: str) -> RegistryVerdict:
        raise RuntimeError("database is locked")

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("fail_sync", [True, False], ids=["sync path", "async path"])
async def test_internal_error_is_5012_and_counted(
    start_gateway: StartGateway, fail_sync: bool
) -> None:
    gateway = await start_gateway()
    assert gateway.classifier is not None
    real = gateway.classifier.registry
    gateway.classifier.registry = BrokenStore(fail_sync)
    mme = await connect_mme(gateway)
    try:
        answer = await mme.check("35209900123456")
        assert answer.get("Result-Code") == 5012
        assert answer.find(1445, 10415) is None  # no Equipment-Status
        assert answer.get("Auth-Session-State") == 1
        # Decided before the registry is asked: unaffected by the broken store.
        blacklisted = await mme.check("35693803564380")
        assert blacklisted.get("Result-Code") == 2001
        assert mme.client.is_open
        _, text = await scrape(gateway)
        assert metric_value(text, "eir_checks_total", interface="s13", status="unable_to_comply", reason="internal_error") == 1
    finally:
        gateway.classifier.registry = real
        await mme.close()
