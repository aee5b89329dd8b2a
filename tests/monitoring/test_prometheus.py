"""The shipped alert rules and dashboard, proven with promtool and with a real Prometheus
(Debian's ``prometheus``, started here on loopback) scraping a real gateway under traffic:
the series are there, the recording rules evaluate, every dashboard expression is valid PromQL
over names the gateway exports, and an alert fires when the gateway stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncio_dgram
import pytest

from tests.e2e.conftest import StartGateway, connect_mme, start_gateway  # noqa: F401
from tests.registry.conftest import REPO

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "eir-gateway.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
WHY = "Debian package prometheus not installed (.ci/run installs it)"
METRIC = re.compile(r"\b((?:eir|diameter|registry)_[a-z_]+|eir:[a-z0-9_:]+)\b")


@pytest.mark.skipif(PROMTOOL is None, reason=WHY)
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*), \w+\)$", r"\1", variable["definition"]))
    return exprs


def concrete(expr: str) -> str:
    """A Grafana expression as Prometheus gets it: variables replaced by what Grafana sends."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server the test started, SIGKILL it after 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 60) -> Any:
    """Poll ``check`` until it returns something true; bounded in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


class Prometheus:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.url + path, params=params) as r:
            return await r.json()

    async def query(self, expr: str) -> list[dict[str, Any]]:
        body = await self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])


@pytest.fixture
async def prometheus_for(
    tmp_path: Path,
) -> AsyncIterator[Callable[[int], Awaitable[Prometheus]]]:
    """Start Prometheus scraping 127.0.0.1:PORT every second with the shipped rules, their
    ``for:`` durations shortened so a test sees alerts fire in seconds."""
    if PROMETHEUS is None:
        pytest.skip(WHY)
    processes: list[subprocess.Popen[bytes]] = []
    async with aiohttp.ClientSession() as session:

        async def start(metrics_port: int) -> Prometheus:
            rules = tmp_path / "alerts.yml"
            rules.write_text(re.sub(r"for: \w+", "for: 0s", RULES.read_text()))
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: [{rules}]\n"
                "scrape_configs:\n"
                "  - job_name: eir-gateway\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
            )
            port = free_port()
            log = open(tmp_path / "prometheus.log", "wb")
            processes.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            log.close()
            prometheus = Prometheus(session, f"http://127.0.0.1:{port}")

            async def ready() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(prometheus.url + "/-/ready") as r:
                        return r.status == 200
                return False

            await until(ready, "Prometheus to start (see prometheus.log)")
            return prometheus

        try:
            yield start
        finally:
            for p in processes:
                stop_process(p)


async def test_real_prometheus_scrapes_evaluates_and_alerts(
    start_gateway: StartGateway,  # noqa: F811
    prometheus_for: Callable[[int], Awaitable[Prometheus]],
) -> None:
    # Decision events on (to a UDP syslog receiver bound here), so their series exist too.
    receiver = await asyncio_dgram.bind(("127.0.0.1", 0))
    gateway = await start_gateway(EIR_EVENTS_TYPES="listed",
                                  EIR_EVENTS_SYSLOG=f"udp://127.0.0.1:{receiver.sockname[1]}")
    assert gateway.metrics_port
    prometheus = await prometheus_for(gateway.metrics_port)
    # Simulated traffic until the checks are seen: clean, blacklisted (sample list), unknown
    # TAC, malformed, with IMSIs; a check every 50 ms, bounded by the waits below (60 s each).
    mme = await connect_mme(gateway)
    imeis = ("35209900000018", "35693803564380", "99999999000000", "12")

    async def traffic() -> None:
        n = 0
        while n < 5000:
            await mme.check(imeis[n % 4], imsi=f"0010100000{n:05d}", sv="01")
            n += 1
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(traffic())
    try:
        async def scraped() -> list[dict[str, Any]]:
            return await prometheus.query('eir_checks_total{job="eir-gateway"}')

        series = await until(scraped, "eir_checks_total in Prometheus")
        statuses = {s["metric"]["status"] for s in series}
        assert {"whitelisted", "blacklisted", "greylisted"} <= statuses, statuses

        async def recorded() -> list[dict[str, Any]]:
            return [s for s in await prometheus.query("eir:check_answers:rate5m")
                    if float(s["value"][1]) > 0]

        await until(recorded, "the recording rule eir:check_answers:rate5m")
        [peers] = await prometheus.query("eir:diameter_open_peers")
        assert float(peers["value"][1]) == 1
        # The dashboard: every expression valid, over names the gateway exports (or records).
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as r:
                exported = await r.text()
        recording = set(re.findall(r"record: (\S+)", RULES.read_text()))
        for expr in dashboard_expressions():
            await prometheus.query(concrete(expr))
            for name in METRIC.findall(expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in recording or re.search(rf"^(# TYPE )?{base}(_total|_bucket)?[{{ ]", exported,
                                                      re.M), (name, expr)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        await mme.close()
        receiver.close()

    async def firing(name: str) -> list[dict[str, Any]]:
        alerts = (await prometheus.get("/api/v1/alerts"))["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]

    # No MME left: the no-peer alert fires (its for: shortened to 0s here).
    await until(lambda: firing("EirNoS13Peer"), "EirNoS13Peer to fire")
    assert not await firing("EirGatewayDown")
    await gateway.stop()
    [down] = await until(lambda: firing("EirGatewayDown"), "EirGatewayDown to fire")
    assert down["labels"]["instance"] == f"127.0.0.1:{gateway.metrics_port}"
