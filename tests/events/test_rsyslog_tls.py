"""Syslog over TLS (RFC 5425, octet counting as RFC 6587 §3.4.1) received by a real rsyslog
with its gtls network stream driver (Debian ``rsyslog-gnutls``), started here with a test CA:
the receiver's certificate is checked (a wrong CA fails and is counted), the gateway presents
its own certificate to a receiver that asks for one (x509/name), and a receiver that closed
the connection gets the next event on a new one."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import EventsConfig
from gateway.events.bus import EventBus, EventsCollector
from gateway.events.detector import EventDetector
from gateway.events.factory import build_bus
from gateway.events.model import EventType
from gateway.events.sinks import DeliveryFailed, StreamSyslog
from gateway.events.syslog import SyslogFormatter
from tests.certs import TestCa
from tests.e2e.conftest import StartGateway, connect_mme, start_gateway  # noqa: F401
from tests.events.test_events import event
from tests.events.test_rsyslog import RSYSLOGD, Lines, running_rsyslog
from tests.monitoring.test_prometheus import free_port

GTLS = glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so")
pytestmark = [
    pytest.mark.skipif(RSYSLOGD is None,
                       reason="Debian package rsyslog not installed (.ci/run installs it)"),
    pytest.mark.skipif(not GTLS, reason="rsyslog's gtls driver missing: Debian package "
                                        "rsyslog-gnutls not installed (.ci/run installs it)"),
]

CLIENT_NAME = "eir-gw.example.net"
# Two TLS inputs: "anon" only encrypts and proves the server; "x509/name" also requires a
# client certificate from the CA whose name is a permitted peer.
CONFIG = """
global(workDirectory="{work}"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{server_auth}" ruleset="events")
input(type="imtcp" address="127.0.0.1" port="{mutual}" ruleset="events"
      streamDriver.authMode="x509/name" permittedPeer=["{client}"])
"""


class Receiver:
    def __init__(self, directory: Path, ca: TestCa) -> None:
        self.directory = directory
        self.ca = ca
        self.server_auth, self.mutual = free_port(), free_port()
        server = ca.issue("syslog.example.net")
        self.config = CONFIG.format(work=directory, ca=ca.cert, cert=server.cert,
                                    key=server.key, server_auth=self.server_auth,
                                    mutual=self.mutual, client=CLIENT_NAME)

    def running(self) -> contextlib.AbstractAsyncContextManager[Lines]:
        return running_rsyslog(self.directory, self.config, self.server_auth)


@pytest.fixture
def receiver(tmp_path: Path) -> Receiver:
    return Receiver(tmp_path, TestCa(tmp_path, "syslog-test"))


@pytest.fixture
async def rsyslog_tls(receiver: Receiver) -> AsyncIterator[Lines]:
    async with receiver.running() as lines:
        yield lines


def formatter() -> SyslogFormatter:
    return SyslogFormatter("local4", "eir-1.example.net", "eir@32473", procid=777)


async def test_tls_receiver_parses_every_field(receiver: Receiver, rsyslog_tls: Lines) -> None:
    context = ssl.create_default_context(cafile=str(receiver.ca.cert))
    sink = StreamSyslog("127.0.0.1", receiver.server_auth, formatter(), context)
    try:
        await sink.deliver(event(origin_host='mme"1]'))
        await sink.deliver(event(EventType.NEW_IMSI, status="WHITELISTED", reason="clean",
                                 previous_imsi="001010000000000"))
    finally:
        await sink.close()
    listed, new_imsi = await rsyslog_tls(2)
    assert listed[0] == "imtcp" and listed[1] == str(20 * 8 + 4) and listed[2] == "1"
    assert listed[3].startswith("2025-12-04T15:00:00.123456")
    assert listed[4:8] == ["eir-1.example.net", "eir-gateway", "777", "listed"]
    assert listed[8].startswith('[eir@32473 type="listed" imei="35209900000018" '
                                'imsi="00101**********" status="BLACKLISTED"')
    assert 'originHost="mme\\"1\\]"' in listed[8]
    assert listed[9].strip() == "IMEI 35209900000018 listed: BLACKLISTED (blacklisted)"
    assert new_imsi[7] == "new_imsi" and 'previousImsi="00101**********"' in new_imsi[8]
    assert sink.stats.delivered == 0 and sink.stats.retries == 0  # the bus counts deliveries


async def test_wrong_ca_fails_and_is_counted(receiver: Receiver, rsyslog_tls: Lines) -> None:
    """A receiver whose certificate the configured CA did not sign is never sent an event:
    the handshake fails, the event counts in eir_events_failed_total{sink="syslog"}."""
    other = TestCa(receiver.directory, "other")
    context = ssl.create_default_context(cafile=str(other.cert))
    bus = EventBus(EventDetector(()), [StreamSyslog("127.0.0.1", receiver.server_auth,
                                                    formatter(), context)])
    registry = CollectorRegistry()
    registry.register(EventsCollector(bus))
    bus.start()
    sink = bus.sinks[0]
    bus._queues[0].put_nowait(event())  # what on_decision queues
    await bus.close()
    assert (sink.stats.delivered, sink.stats.failed, sink.stats.retries) == (0, 1, 1)
    text = generate_latest(registry).decode()
    assert 'eir_events_failed_total{sink="syslog"} 1.0' in text
    # The receiver works: the right CA delivers, and the refused event never arrived.
    good = StreamSyslog("127.0.0.1", receiver.server_auth, formatter(),
                        ssl.create_default_context(cafile=str(receiver.ca.cert)))
    try:
        await good.deliver(event(EventType.CLONE_SUSPECTED, status="GREYLISTED",
                                 reason="clone_suspected"))
    finally:
        await good.close()
    (only,) = await rsyslog_tls(1)
    assert only[7] == "clone_suspected"
    assert "listed" not in (receiver.directory / "events.log").read_text()


async def test_gateway_presents_its_certificate(
    receiver: Receiver, rsyslog_tls: Lines, start_gateway: StartGateway,  # noqa: F811
) -> None:
    """events.syslog_tls_ca / _cert / _key from the configuration: an S13 check's event reaches a
    receiver that admits only a client certificate named as a permitted peer."""
    client = receiver.ca.issue(CLIENT_NAME, client=True)
    gateway = await start_gateway(
        EIR_EVENTS_TYPES="listed", EIR_EVENTS_SYSLOG=f"tls://127.0.0.1:{receiver.mutual}",
        EIR_EVENTS_SYSLOG_TLS_CA=str(receiver.ca.cert),
        EIR_EVENTS_SYSLOG_TLS_CERT=str(client.cert), EIR_EVENTS_SYSLOG_TLS_KEY=str(client.key),
        EIR_EVENTS_SYSLOG_HOSTNAME="eir-tls",
    )
    mme = await connect_mme(gateway, origin_host="mme9.example.net")
    try:
        await mme.check("35693803564380", imsi="001010000000001")  # blacklisted (sample list)
    finally:
        await mme.close()
    (got,) = await rsyslog_tls(1)
    assert got[0] == "imtcp" and got[4] == "eir-tls" and got[7] == "listed"
    assert 'originHost="mme9.example.net" interface="s13"' in got[8]
    assert gateway.events is not None and gateway.events.sinks[0].stats.delivered == 1


async def test_receiver_refusing_our_certificate_gets_nothing(
    receiver: Receiver, rsyslog_tls: Lines,
) -> None:
    """Without a client certificate the x509/name input drops the session. Under TLS 1.3 it
    does so after the handshake, so the sender cannot tell a refused write from a delivered
    one (RFC 5425 has no acknowledgement: the limit stated in the README); what must hold is
    that nothing is accepted from an unauthenticated sender."""
    bus = build_bus(EventsConfig(types=("listed",), syslog=f"tls://127.0.0.1:{receiver.mutual}",
                                 syslog_tls_ca=str(receiver.ca.cert)))
    assert bus is not None
    sink = bus.sinks[0]
    assert isinstance(sink, StreamSyslog)
    try:
        for _ in range(3):
            with contextlib.suppress(DeliveryFailed):
                await sink.deliver(event())
            await asyncio.sleep(0.3)
    finally:
        await sink.close()
    assert "permitted" in (receiver.directory / "rsyslogd.err").read_text()
    log = receiver.directory / "events.log"
    assert not log.exists() or log.read_text() == ""
