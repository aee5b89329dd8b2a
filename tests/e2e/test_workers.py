"""`eir-gateway run --workers 2` as a process: connections spread over the workers, one
/metrics, list changes and monitor mode reaching every worker, a killed worker restarted, SIGTERM
draining every connection with DPR."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from diameter.application import Application
from diameter.dictionary.ts29272_s13 import S13_APPLICATION_ID, VENDOR
from diameter.node import Node
from diameter.settings import LocalIdentity, PeerSettings
from diameter.transport import Client
from gateway.imei import luhn_check_digit
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from tests.e2e.conftest import Mme
from tests.postgres_server import postgres_dsn, postgres_server
from tests.redis_server import RedisServer, redis_server

__all__ = ["postgres_dsn", "postgres_server", "redis_server"]  # the fixtures

REPO = Path(__file__).resolve().parents[2]
BLACK_IMEI = "35693803564380"  # on the sample blacklist
OTHER_IMEI = "35209900100007"  # a known TAC, on no list, clean in the sample registry
CLONED_IMEI = "35209900123456"  # known TAC, on no list, clean in the sample registry
WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2


class GatewayProcess:
    """The supervisor process; its stderr is read by a thread, line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, count: int = 1) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text))
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} ({count}x) in the gateway's log:\n{self.text}")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the embedded config and its input files (SIGHUP re-reads the copy)."""
    for name in ("gateway.toml", "tac-sample.txt", "lists-sample.csv",
                 "registry-declarations.json"):
        shutil.copy(REPO / "config" / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def start(config_dir: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []
    env = dict(
        os.environ,
        EIR_DIAMETER_LISTEN="tcp://127.0.0.1:0",
        EIR_METRICS_LISTEN="127.0.0.1:0",
        EIR_N5G_EIR_LISTEN="http://127.0.0.1:0",
        EIR_STATE_DIRECTORY=str(config_dir / "var"),
        EIR_LISTS_POLL_INTERVAL_SECONDS="0.2",
    )

    def run(*args: str, **extra_env: str) -> GatewayProcess:
        command = [sys.executable, "-m", "gateway.cli", "run", "--config",
                   str(config_dir / "gateway.toml"), *args]
        process = subprocess.Popen(command, cwd=config_dir, env={**env, **extra_env},
                                   stderr=subprocess.PIPE, text=True)
        started.append(GatewayProcess(process))
        return started[-1]

    yield run
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(10)


async def connect(port: int, origin_host: str) -> Mme:
    node = Node(
        PeerSettings(identity=LocalIdentity(origin_host=origin_host, origin_realm="test")),
        [Application(S13_APPLICATION_ID, {}, vendor_id=VENDOR, name="S13")],
    )
    return Mme(await Client.connect(node, "127.0.0.1", port), node)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, tuple], float]:
    async with session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def statuses(mmes: list[Mme], imei: str) -> set[int]:
    answers = await asyncio.gather(*(mme.check(imei, sv="01") for mme in mmes))
    return {answer.get("Equipment-Status") for answer in answers}


async def eventually(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_two_workers_share_listeners_state_changes_restarts_and_drain(
    start: Callable[..., GatewayProcess], config_dir: Path
) -> None:
    gateway = start("--workers", "2")
    ready = gateway.wait_for(
        r"2 workers serving S13 on tcp://127\.0\.0\.1:(\d+), N5g-eir on (http://127\.0\.0\.1:\d+),"
        r" metrics on 127\.0\.0\.1:(\d+)"
    )[0]
    port, metrics = int(ready.group(1)), f"http://127.0.0.1:{ready.group(3)}"
    n5g_eir = ready.group(2)
    workers = {
        int(m.group(1)): (int(m.group(2)), m.group(3))
        for m in gateway.wait_for(r"worker (\d) \(pid (\d+)\) ready; its own metrics on (\S+)",
                                  count=2)
    }
    mmes = [await connect(port, f"mme{i}.test") for i in range(16)]
    async with aiohttp.ClientSession() as session:
        async with session.get(metrics + "/readyz") as response:
            assert response.status == 200
            checks = (await response.json())["checks"]
        assert checks["worker_0"] and checks["worker_1"]

        # Every connection is accepted by one worker; both workers got some.
        assert await statuses(mmes, BLACK_IMEI) == {BLACKLISTED}
        per_worker = []
        for _, url in workers.values():
            samples = await scrape(session, url)
            per_worker.append(value(samples, "diameter_peers", state="R_OPEN"))
        assert sum(per_worker) == 16 and min(per_worker) >= 1, per_worker
        # N5g-eir: its listener is the supervisor's too; AMF connections spread the same way.
        pei = f"imei-{BLACK_IMEI}{luhn_check_digit(BLACK_IMEI[:14])}"
        for _ in range(8):
            async with httpx.AsyncClient(http1=False, http2=True, base_url=n5g_eir) as amf:
                response = await amf.get(EQUIPMENT_STATUS_PATH, params={"pei": pei})
                assert response.json() == {"status": "BLACKLISTED"}
        merged = await scrape(session, metrics + "/metrics")
        assert value(merged, "eir_checks_total", interface="s13", status="blacklisted", reason="blacklisted") == 16
        assert value(merged, "eir_checks_total", interface="n5g_eir", status="blacklisted",
                     reason="blacklisted") == 8
        assert value(merged, "diameter_peers", state="R_OPEN") == 16
        assert value(merged, "eir_lists_version") >= 1

        # A list change (another process writes the lists database) reaches every worker.
        assert await statuses(mmes, OTHER_IMEI) == {WHITELISTED}
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "lists", "add", "black", "imei", OTHER_IMEI,
             "--config", str(config_dir / "gateway.toml")],
            cwd=config_dir, env={**os.environ, "EIR_STATE_DIRECTORY": str(config_dir / "var")},
            check=True, capture_output=True, timeout=60,
        )
        await eventually(lambda: _all(mmes, OTHER_IMEI, BLACKLISTED))

        # Monitor mode by SIGHUP reaches every worker.
        toml = config_dir / "gateway.toml"
        toml.write_text(toml.read_text().replace("monitor_mode = false", "monitor_mode = true"))
        gateway.process.send_signal(signal.SIGHUP)
        gateway.wait_for(r"\[worker \d\] eir\.gateway: lists and policy reloaded", count=2)
        assert await statuses(mmes, BLACK_IMEI) == {WHITELISTED}
        merged = await scrape(session, metrics + "/metrics")
        assert value(merged, "eir_monitor_mode") == 1
        checked = value(merged, "eir_checks_total", interface="s13", status="blacklisted", reason="blacklisted")

        # A killed worker is restarted and counted; the counts it made stay in the sums.
        pid = workers[0][0]
        os.kill(pid, signal.SIGKILL)
        gateway.wait_for(r"worker 0 \(pid \d+\) was killed by SIGKILL")
        gateway.wait_for(r"worker 0 \(pid \d+\) ready", count=2)
        merged = await scrape(session, metrics + "/metrics")
        assert value(merged, "eir_worker_restarts_total") == 1
        assert value(merged, "eir_workers") == 2
        assert value(
            merged, "eir_checks_total", interface="s13", status="blacklisted", reason="blacklisted"
        ) >= checked
        async with session.get(metrics + "/readyz") as response:
            assert response.status == 200
        survivors = [mme for mme in mmes if mme.client.is_open]
        assert 1 <= len(survivors) < 16
        newcomer = await connect(port, "mme-new.test")
        assert (await newcomer.check(BLACK_IMEI, sv="01")).get("Equipment-Status") == WHITELISTED

    # SIGTERM: every worker DPRs each of its peers, then the supervisor exits 0.
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0, gateway.text
    for mme in [*survivors, newcomer]:
        await asyncio.wait_for(mme.client.wait_closed(), 10)
        assert mme.client.down_reason is not None
        assert "DPR received" in mme.client.down_reason, mme.client.down_reason
    gateway.wait_for(r"EIR gateway stopped \(2 workers\)")


async def test_api_served_by_worker_0_and_its_writes_reach_every_worker(
    start: Callable[..., GatewayProcess],
) -> None:
    """The provisioning API under --workers 2: the supervisor binds api.listen, worker 0 alone
    serves it; a write reaches both workers' lists at once (lists polling is off here: only the
    SIGUSR1 relay through the supervisor can bring it to worker 1) and the merged /metrics; a
    killed worker 0 serves it again on the same port, a request made meanwhile answered."""
    secret = "workers-test-secret-0123456789"
    gateway = start("--workers", "2", EIR_API_LISTEN="127.0.0.1:0",
                    EIR_API_TOKENS=f"ops:read+write:{secret}",
                    EIR_LISTS_POLL_INTERVAL_SECONDS="0")
    ready = gateway.wait_for(r"2 workers serving S13 on tcp://127\.0\.0\.1:(\d+), .* metrics on "
                             r"127\.0\.0\.1:(\d+)")[0]
    port, metrics = int(ready.group(1)), f"http://127.0.0.1:{ready.group(2)}"
    api_port = int(gateway.wait_for(
        r"provisioning API on http://127\.0\.0\.1:(\d+) \(worker 0\)")[0].group(1))
    api = f"http://127.0.0.1:{api_port}"
    workers = {int(m.group(1)): (int(m.group(2)), m.group(3)) for m in gateway.wait_for(
        r"worker (\d) \(pid (\d+)\) ready; its own metrics on (\S+)", count=2)}
    gateway.wait_for(r"\[worker 0\] eir\.api: provisioning API on")
    assert "[worker 1] eir.api: provisioning API" not in gateway.text
    mmes = [await connect(port, f"mme{i}.test") for i in range(16)]
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        per_worker = [value(await scrape(session, url), "diameter_peers", state="R_OPEN")
                      for _, url in workers.values()]
        assert min(per_worker) >= 1, per_worker  # both workers answer some of the MMEs
        assert await statuses(mmes, OTHER_IMEI) == {WHITELISTED}
        version = value(await scrape(session, metrics + "/metrics"), "eir_lists_version")

        entry = {"list": "black", "kind": "imei", "value": OTHER_IMEI, "reason": "stolen"}
        async with session.post(api + "/v1/lists/entries", json=entry) as response:
            assert response.status == 201, await response.text()
        await eventually(lambda: _all(mmes, OTHER_IMEI, BLACKLISTED))

        async def every_worker_at(at_least: float) -> bool:
            own = [value(await scrape(session, url), "eir_lists_version")
                   for _, url in workers.values()]
            merged = value(await scrape(session, metrics + "/metrics"), "eir_lists_version")
            return min(own) >= at_least and merged == min(own)

        await eventually(lambda: every_worker_at(version + 1))

        # Worker 0 killed: the API's socket is the supervisor's, so a request made now waits
        # in its accept queue and the restarted worker 0 answers it.
        os.kill(workers[0][0], signal.SIGKILL)
        gateway.wait_for(r"worker 0 \(pid \d+\) was killed by SIGKILL")
        async with session.get(f"{api}/v1/checks/{OTHER_IMEI}") as response:
            assert response.status == 200
            assert (await response.json())["decided_by"] == "blacklisted"
        gateway.wait_for(r"worker 0 \(pid \d+\) ready", count=2)
        survivors = [mme for mme in mmes if mme.client.is_open]
        async with session.delete(f"{api}/v1/lists/black/entries/imei:{OTHER_IMEI}") as response:
            assert response.status in (200, 204), await response.text()
        await eventually(lambda: _all(survivors, OTHER_IMEI, WHITELISTED))
        async with session.get(api + "/v1/audit", params={"actor": "api:ops"}) as response:
            actions = [r["action"] for r in (await response.json())["records"]]
        assert actions == ["create", "delete"]
    for mme in survivors:
        await mme.close()
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0, gateway.text


async def _all(mmes: list[Mme], imei: str, status: int) -> bool:
    return await statuses(mmes, imei) == {status}


def test_workers_refuse_a_bad_lists_file_before_starting(
    start: Callable[..., GatewayProcess], config_dir: Path
) -> None:
    (config_dir / "lists-sample.csv").write_text("list,kind,value,imsi,reason\nblack,imei,12,,x\n")
    gateway = start("--workers", "2")
    assert gateway.process.wait(60) == 2
    gateway.wait_for(r"bad input file: .*lists-sample\.csv")
    assert "worker 0" not in gateway.text  # refused before any worker started


def test_workers_option_is_checked(start: Callable[..., GatewayProcess]) -> None:
    gateway = start("--workers", "0")
    assert gateway.process.wait(60) == 2
    gateway.wait_for(r"--workers 0: must be 1 to 256")


async def test_clone_detection_counts_across_workers_through_redis(
    start: Callable[..., GatewayProcess], redis_server: RedisServer, config_dir: Path
) -> None:
    toml = config_dir / "gateway.toml"
    text = toml.read_text().replace('redis_url = ""', f'redis_url = "{redis_server.url}"')
    text = text.replace("budget_seconds = 0.05               # the most a check waits for the shared",
                        "budget_seconds = 5.0                # the most a check waits for the shared")
    text = text.replace("[clone_detection]\nenabled = false\nthreshold = 10",
                        "[clone_detection]\nenabled = true\nthreshold = 2")
    toml.write_text(text)
    secret = "workers-test-secret-0123456789"
    gateway = start("--workers", "2", EIR_API_LISTEN="127.0.0.1:0",
                    EIR_API_TOKENS=f"ops:read+pii:{secret}")
    ready = gateway.wait_for(r"2 workers serving S13 on tcp://127\.0\.0\.1:(\d+)")[0]
    port = int(ready.group(1))
    api = "http://127.0.0.1:" + gateway.wait_for(r"provisioning API on http://\S+:(\d+)")[0][1]
    urls = [m.group(1) for m in gateway.wait_for(r"ready; its own metrics on (\S+)", count=2)]
    # Connect one MME at a time and see which worker took it, until each worker has one.
    on_worker: dict[int, Mme] = {}
    spare: list[Mme] = []
    async with aiohttp.ClientSession() as session:
        for i in range(32):
            before = [value(await scrape(session, u), "diameter_peers", state="R_OPEN")
                      for u in urls]
            mme = await connect(port, f"mme{i}.test")
            after = [value(await scrape(session, u), "diameter_peers", state="R_OPEN")
                     for u in urls]
            worker = next(w for w in range(2) if after[w] > before[w])
            if worker in on_worker:
                spare.append(mme)
            else:
                on_worker[worker] = mme
            if len(on_worker) == 2:
                break
    assert len(on_worker) == 2, "every connection went to one worker"
    # Two IMSIs through worker 0, a third through worker 1, which saw one only itself.
    for imsi in ("001010000000011", "001010000000022"):
        answer = await on_worker[0].check(CLONED_IMEI, sv="01", imsi=imsi)
        assert answer.get("Equipment-Status") == WHITELISTED
    answer = await on_worker[1].check(CLONED_IMEI, sv="01", imsi="001010000000033")
    assert answer.get("Equipment-Status") == GREYLISTED
    # The API (worker 0, which saw two of them) shows all three once worker 1's observation is
    # written to the log they share.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        async def all_three() -> bool:
            url = f"{api}/v1/imeis/{CLONED_IMEI}/clone-detection"
            async with session.get(url) as response:
                body = await response.json()
            return bool(body["distinct_imsis"] == 3 and body["suspected"]
                        and body["source"] == "tracker and observation log")

        await eventually(all_three)
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0, gateway.text


def _writers_of(root: int) -> list[int]:
    """The observation writer processes under process ``root`` (its workers' children)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile

    def under(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return [pid for pid, command in commands.items()
            if "gateway.observation_writer" in command and under(pid)]


async def test_workers_on_postgresql_and_the_stream_write_each_sighting_once(
    start: Callable[..., GatewayProcess], redis_server: RedisServer, postgres_dsn: str
) -> None:
    """Two workers, PostgreSQL state, observations through the Redis stream: each worker's
    writer process is a consumer of the group and writes into PostgreSQL; every sighting is
    written once, also after one writer is killed (its worker restarts it)."""
    import asyncpg

    gateway = start("--workers", "2", EIR_STATE_BACKEND="postgresql", EIR_STATE_DSN=postgres_dsn,
                    EIR_SHARED_REDIS_URL=redis_server.url,
                    EIR_SHARED_OBSERVATION_STREAM="true",
                    EIR_OBSERVATIONS_FLUSH_INTERVAL_SECONDS="0.1")
    port = int(gateway.wait_for(r"2 workers serving S13 on tcp://127\.0\.0\.1:(\d+)")[0].group(1))
    gateway.wait_for(r"ready; its own metrics on (\S+)", count=2)
    writers = _writers_of(gateway.process.pid)
    assert len(writers) == 2, writers
    mmes = [await connect(port, f"mme{i}.test") for i in range(8)]  # spread over both workers

    async def sightings(first: int, n: int) -> None:
        for i in range(first, first + n):
            answer = await mmes[i % len(mmes)].check(f"352099{i:08d}", sv="01",
                                                       imsi=f"00101{i:010d}")
            assert answer.get("Equipment-Status") is not None

    async def stored() -> tuple[int, int]:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            row = await conn.fetchrow("SELECT count(*), coalesce(sum(count), 0) FROM observations")
        finally:
            await conn.close()
        return int(row[0]), int(row[1])

    async def written(n: int) -> bool:
        return await stored() == (n, n)

    await sightings(0, 200)
    await eventually(lambda: written(200))
    import redis.asyncio

    from gateway.stream_entries import packed_key

    client = redis.asyncio.from_url(redis_server.url)
    try:
        consumers = await client.xinfo_consumers("eir:observations", "eir")
        names = {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                 for c in consumers}
        assert len(names) == 2 and all(name.endswith(":writer") for name in names), names

        async def acknowledged() -> bool:  # with each writer's next read, on either stream
            # (this release appends to v2: the v1 stream alone would always be acknowledged)
            pending = [await client.xpending(key, "eir")
                       for key in ("eir:observations", packed_key("eir:observations"))]
            return all(int(p["pending"]) == 0 for p in pending)

        await eventually(acknowledged)
    finally:
        await client.aclose()
    os.kill(writers[0], signal.SIGKILL)
    await sightings(200, 200)
    # A writer killed before it acknowledged a batch has it written again by its successor (at
    # least once); this one had acknowledged everything, so each sighting is there once.
    await eventually(lambda: written(400), timeout=40)
    # (the other worker's writer may have drained them all meanwhile: the group spreads them)
    await eventually(lambda: len(_writers_of(gateway.process.pid)) == 2)
    await sightings(400, 100)
    await eventually(lambda: written(500))
    for mme in mmes:
        await mme.close()
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0, gateway.text
