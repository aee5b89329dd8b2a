"""Mirror mode: /v1/changes into a local SQLite copy, local verdicts, restart and resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registry_client.faults import Fault
from registry_client.local import LocalRegistry
from registry_client.mirror import CURSOR_KEY, MirrorError
from registry_client.model import RegistryStatus, Report, ReportType, VerdictOrigin
from registry_client.server import RegistryServer
from registry_client.wire import TacDeclaration
from tests.registry.conftest import (
    NON_PARTICIPATING,
    OUTSIDE,
    STOLEN,
    UNDECLARED,
    ClientFactory,
    wait_until,
)


async def test_sync_answers_locally_and_resumes_after_restart(
    server: RegistryServer, local: LocalRegistry, make_client: ClientFactory, tmp_path: Path
) -> None:
    mirror_db = str(tmp_path / "mirror.sqlite")
    options = {"mirror": True, "mirror_database": mirror_db, "mirror_page_size": 2}
    client = make_client(server.url, **options)
    assert await client.sync_mirror() == 6
    assert server.request_counts["/v1/changes"] == 3  # pages of 2

    stolen = client.cached(STOLEN)  # answered synchronously, without a task
    assert stolen is not None
    assert stolen.origin is VerdictOrigin.MIRROR and stolen.active_reports
    assert (await client.check(STOLEN)).origin is VerdictOrigin.MIRROR
    assert (await client.check(OUTSIDE)).status is RegistryStatus.NOT_MANUFACTURED
    assert (await client.check(NON_PARTICIPATING)).origin is VerdictOrigin.MIRROR
    assert server.request_counts["/v1/imeis/{imei}"] == 0
    undeclared = await client.check(UNDECLARED)  # TAC not in the copy: online
    assert undeclared.origin is VerdictOrigin.ONLINE
    await client.close()

    # The registry moves on while the gateway is down.
    local.apply([Report(OUTSIDE, ReportType.COUNTERFEIT, "SN", "2026-04-01")])
    local.apply(
        [TacDeclaration("35209900", participating=True, manufacturer="Example Handsets Ltd")]
    )

    again = make_client(server.url, **options)
    before = await again.check(OUTSIDE)  # survived the restart, answered before any sync
    assert before.origin is VerdictOrigin.MIRROR and not before.reports
    assert await again.sync_mirror() == 2  # resumed from the stored cursor: only the new records
    after = await again.check(OUTSIDE)
    assert after.active_reports[0].type is ReportType.COUNTERFEIT
    assert (await again.check(STOLEN)).status is RegistryStatus.NOT_MANUFACTURED  # no ranges now
    assert server.request_counts["/v1/imeis/{imei}"] == 1  # still only UNDECLARED went online


async def test_background_sync_on_start(
    server: RegistryServer, make_client: ClientFactory, tmp_path: Path
) -> None:
    client = make_client(
        server.url, mirror=True, mirror_database=str(tmp_path / "m.sqlite"), mirror_interval=60
    )
    await client.start()
    mirror = client.mirror
    assert mirror is not None
    await wait_until(lambda: mirror.synced_at is not None)
    assert (await client.check(STOLEN)).origin is VerdictOrigin.MIRROR


async def test_refresh_tac_uses_etag(
    server: RegistryServer, local: LocalRegistry, make_client: ClientFactory, tmp_path: Path
) -> None:
    client = make_client(server.url, mirror=True, mirror_database=str(tmp_path / "m.sqlite"))
    mirror = client.mirror
    assert mirror is not None
    assert await mirror.refresh_tac("35332011") is True
    assert await mirror.refresh_tac("35332011") is False  # 304 Not Modified
    assert mirror.store.tac("35332011") is not None
    local.apply([TacDeclaration("35332011", participating=False)])
    assert await mirror.refresh_tac("35332011") is True
    assert mirror.store.tac("35332011") == TacDeclaration("35332011", participating=False)
    assert await mirror.refresh_tac("12345678") is False  # 404: nothing declared
    assert server.request_counts["/v1/tacs/{tac}"] == 4


async def test_new_url_restarts_the_feed(
    server: RegistryServer, make_client: ClientFactory, tmp_path: Path
) -> None:
    options = {"mirror": True, "mirror_database": str(tmp_path / "m.sqlite")}
    client = make_client(server.url, **options)
    await client.sync_mirror()
    await client.close()
    moved = make_client(server.url + "/", **options)  # same registry: cursor kept
    assert moved.mirror is not None and moved.mirror.cursor == "6"
    await moved.close()
    other = make_client("http://127.0.0.1:9/", **options)
    assert other.mirror is not None and other.mirror.store.get_meta(CURSOR_KEY) == ""


async def test_sync_failure_leaves_the_copy(
    faulty: RegistryServer, make_client: ClientFactory, tmp_path: Path
) -> None:
    assert faulty.faults is not None
    faulty.faults.set_mode(Fault.SERVER_ERROR)
    client = make_client(faulty.url, mirror=True, mirror_database=str(tmp_path / "m.sqlite"))
    with pytest.raises(MirrorError):
        await client.sync_mirror()  # /v1/changes answers 503
    assert client.mirror is not None and client.mirror.cursor == ""
    assert client.mirror.verdict(STOLEN) is None  # never synced: nothing answered locally


async def test_online_verdict_for_unmirrored_tac_fetches_it(
    server: RegistryServer, local: LocalRegistry, make_client: ClientFactory, tmp_path: Path
) -> None:
    client = make_client(
        server.url, mirror=True, mirror_database=str(tmp_path / "m.sqlite"), mirror_interval=60
    )
    await client.start()  # first background sync now, the next one in a minute
    mirror = client.mirror
    assert mirror is not None
    await wait_until(lambda: mirror.synced_at is not None)
    # Declared after the sync: the copy does not know it yet.
    local.apply([TacDeclaration("35111111", participating=True, manufacturer="Late Ltd")])
    first = await client.check("35111111000001")
    assert first.origin is VerdictOrigin.ONLINE
    assert first.status is RegistryStatus.NOT_MANUFACTURED
    await wait_until(lambda: mirror.store.tac("35111111") is not None)
    second = await client.check("35111111000002")
    assert second.origin is VerdictOrigin.MIRROR
    assert second.status is RegistryStatus.NOT_MANUFACTURED
    assert server.request_counts["/v1/tacs/{tac}"] == 1
    await client.check(UNDECLARED)  # undeclared TAC: nothing to fetch
    await asyncio.sleep(0.02)
    assert server.request_counts["/v1/tacs/{tac}"] == 1


async def test_stale_copy_is_not_used(
    server: RegistryServer, make_client: ClientFactory, tmp_path: Path
) -> None:
    client = make_client(
        server.url,
        mirror=True,
        mirror_database=str(tmp_path / "m.sqlite"),
        mirror_max_staleness=3600.0,
    )
    mirror = client.mirror
    assert mirror is not None
    await client.sync_mirror()
    synced_at = mirror.synced_at
    assert synced_at is not None
    mirror.clock = lambda: synced_at + 3599.0
    assert (await client.check(STOLEN)).origin is VerdictOrigin.MIRROR
    # The feed stopped an hour ago: answers come from the registry itself, not the old copy.
    mirror.clock = lambda: synced_at + 3601.0
    assert mirror.verdict(STOLEN) is None and client.cached(STOLEN) is None
    online = await client.check(STOLEN)
    assert online.origin is VerdictOrigin.ONLINE and online.active_reports
    assert server.request_counts["/v1/imeis/{imei}"] == 1
    # A successful sync makes the copy current again.
    mirror.clock = lambda: synced_at + 3602.0
    await client.sync_mirror()
    assert mirror.synced_at == synced_at + 3602.0
    assert mirror.verdict(STOLEN) is not None
