"""Decision events received by a real rsyslog (Debian ``rsyslog``, started here with its own
configuration on loopback UDP and TCP ports): rsyslog's RFC 5424 parser must find every header
field and the structured data where we put them. And a gateway end to end: an S13 check of a
blacklisted handset reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.events.model import EventType
from gateway.events.sinks import StreamSyslog, UdpSyslog
from gateway.events.syslog import SyslogFormatter
from tests.e2e.conftest import StartGateway, connect_mme, start_gateway  # noqa: F401
from tests.events.test_events import event
from tests.monitoring.test_prometheus import free_port, stop_process, until

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(RSYSLOGD is None,
                                reason="Debian package rsyslog not installed (.ci/run installs it)")

# One line per message: the properties rsyslog's RFC 5424 parser filled in, "|"-separated.
OUTPUT = """
template(name="fields" type="list") {{
  property(name="inputname") constant(value="|")
  property(name="pri") constant(value="|")
  property(name="protocol-version") constant(value="|")
  property(name="timereported" dateFormat="rfc3339") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="procid") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg" droplastlf="on") constant(value="\\n")
}}
ruleset(name="events") {{
  action(type="omfile" file="{out}" template="fields")
}}
"""
CONFIG = """
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="events")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="events")
"""

Lines = Callable[[int], Awaitable[list[list[str]]]]


@contextlib.asynccontextmanager
async def running_rsyslog(
    directory: Path, config: str, tcp_port: int
) -> AsyncIterator[Lines]:
    """rsyslogd on ``config`` (inputs; messages go to the ruleset ``events``) until the block
    ends; ready once ``tcp_port`` accepts. Yields ``lines(n)``: the first n messages received,
    as their fields, waiting (bounded) for them."""
    out = directory / "events.log"
    conf = directory / "rsyslog.conf"
    conf.write_text(config + OUTPUT.format(out=out))
    assert RSYSLOGD is not None
    with open(directory / "rsyslogd.err", "ab") as err:
        process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL, stderr=err,
        )

    async def lines(n: int) -> list[list[str]]:
        async def enough() -> list[list[str]] | None:
            got = out.read_text().splitlines() if out.exists() else []
            return [line.split("|") for line in got] if len(got) >= n else None

        return list(await until(enough, f"{n} lines from rsyslog (see rsyslogd.err)", 30))

    try:
        async def listening() -> bool:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", tcp_port)
            except OSError:
                return False
            w.close()
            return True

        await until(listening, "rsyslogd to listen", 30)
        yield lines
    finally:
        stop_process(process)


@pytest.fixture
async def rsyslog(tmp_path: Path) -> AsyncIterator[tuple[int, int, Lines]]:
    udp, tcp = free_port(), free_port()
    config = CONFIG.format(work=tmp_path, udp=udp, tcp=tcp)
    async with running_rsyslog(tmp_path, config, tcp) as lines:
        yield udp, tcp, lines


async def test_rsyslog_parses_every_field(rsyslog: Any) -> None:
    udp, tcp, lines = rsyslog
    formatter = SyslogFormatter("local4", "eir-1.example.net", "eir@32473", procid=777)
    udp_sink = UdpSyslog("127.0.0.1", udp, formatter)
    tcp_sink = StreamSyslog("127.0.0.1", tcp, formatter)
    try:
        await udp_sink.deliver(event(origin_host='mme"1]'))
        await tcp_sink.deliver(event(EventType.NEW_IMSI, status="WHITELISTED", reason="clean",
                                     previous_imsi="001010000000000"))
        await tcp_sink.deliver(event(EventType.CLONE_SUSPECTED, status="GREYLISTED",
                                     reason="clone_suspected"))
    finally:
        await udp_sink.close()
        await tcp_sink.close()
    got = {fields[7]: fields for fields in await lines(3)}
    listed = got["listed"]
    assert listed[0] == "imudp" and listed[1] == str(20 * 8 + 4) and listed[2] == "1"
    assert listed[3].startswith("2025-12-04T15:00:00.123456")
    assert listed[4:7] == ["eir-1.example.net", "eir-gateway", "777"]
    assert listed[8].startswith('[eir@32473 type="listed" imei="35209900000018" '
                                'imsi="00101**********" status="BLACKLISTED"')
    assert 'originHost="mme\\"1\\]"' in listed[8]  # escaped as RFC 5424 §6.3.3 says
    assert listed[9].strip() == "IMEI 35209900000018 listed: BLACKLISTED (blacklisted)"
    new_imsi = got["new_imsi"]
    assert new_imsi[0] == "imtcp" and new_imsi[1] == str(20 * 8 + 5)
    assert 'previousImsi="00101**********"' in new_imsi[8]
    assert got["clone_suspected"][0] == "imtcp"


async def test_gateway_sends_events_of_checks(
    rsyslog: Any, start_gateway: StartGateway,  # noqa: F811
) -> None:
    udp, _, lines = rsyslog
    gateway = await start_gateway(
        EIR_EVENTS_TYPES="listed,new_imsi", EIR_EVENTS_SYSLOG=f"udp://127.0.0.1:{udp}",
        EIR_EVENTS_SYSLOG_HOSTNAME="eir-test",
    )
    mme = await connect_mme(gateway, origin_host="mme7.example.net")
    try:
        await mme.check("35693803564380", imsi="001010000000001")  # blacklisted (sample list)
        await mme.check("35209900000018", imsi="001010000000001")  # clean: no event
        await mme.check("35209900000018", imsi="001010000000002")  # a new IMSI
    finally:
        await mme.close()
    got = await lines(2)
    assert [f[7] for f in got] == ["listed", "new_imsi"]
    assert all('originHost="mme7.example.net" interface="s13"' in f[8] for f in got)
    assert 'imsi="00101**********"' in got[0][8] and got[0][4] == "eir-test"
    assert gateway.events is not None
    assert gateway.events.raised[EventType.LISTED] == 1
    assert gateway.events.sinks[0].stats.delivered == 2
