"""RFC 5424 syslog messages for decision events, and their framing (sans-IO).

One event is one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID type="listed" imei=... ...] MSG

* PRI = facility x 8 + severity (§6.2.1): warning (4) for a blacklisted check, a clone or a
  registry report, notice (5) for the others.
* TIMESTAMP: RFC 3339 in UTC with microseconds (§6.2.3). HOSTNAME, APP-NAME, PROCID, MSGID are
  printable US-ASCII without spaces, at most 255, 48, 128 and 32 characters (§6.2.4-6.2.7).
* The structured data element's SD-ID is ``name@private-enterprise-number`` (§7.2.2; the
  default ``eir@32473`` uses the example number of RFC 5612: set your own). Parameter values
  escape ``"``, ``\\`` and ``]`` with a backslash (§6.3.3).
* MSG is a short text for people; the data is in the structured data.

Transports: UDP, one message per datagram (RFC 5426); TCP and TLS with octet counting,
``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 §3.4.1, RFC 5425 §4.3).
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from gateway.events.model import DecisionEvent, EventType

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14,
    "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}  # RFC 5424 Table 1
WARNING, NOTICE = 4, 5  # RFC 5424 Table 2
APP_NAME = "eir-gateway"


def _header_field(text: str, limit: int) -> str:
    """PRINTUSASCII (33-126), at most ``limit`` characters; ``-`` (NILVALUE) when empty."""
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def severity(event: DecisionEvent) -> int:
    if event.type in (EventType.CLONE_SUSPECTED, EventType.REGISTRY_REPORTED):
        return WARNING
    if event.type is EventType.LISTED and event.status == "BLACKLISTED":
        return WARNING
    return NOTICE


class SyslogFormatter:
    def __init__(
        self,
        facility: str = "local0",
        hostname: str | None = None,
        sd_id: str = "eir@32473",
        mask_imsi: bool = True,
        procid: int | None = None,
    ) -> None:
        self.facility = FACILITIES[facility]
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.sd_id = sd_id
        self.mask_imsi = mask_imsi
        self.procid = _header_field(str(os.getpid() if procid is None else procid), 128)

    def format(self, event: DecisionEvent) -> bytes:
        data = event.as_json(self.mask_imsi)
        pri = self.facility * 8 + severity(event)
        when = datetime.fromtimestamp(event.at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        params = " ".join(
            f'{name}="{_escape(str(value))}"'
            for name, value in (
                ("type", data["type"]), ("imei", data["imei"]), ("imsi", data["imsi"]),
                ("previousImsi", data["previous_imsi"]), ("status", data["status"]),
                ("reason", data["reason"]), ("originHost", data["origin_host"]),
                ("interface", data["interface"]),
            )
            if value is not None
        )
        text = f"IMEI {event.imei} {event.type.value}: {event.status} ({event.reason})"
        msgid = _header_field(event.type.value, 32)
        line = (f"<{pri}>1 {when} {self.hostname} {APP_NAME} {self.procid} {msgid} "
                f"[{self.sd_id} {params}] {text}")
        return line.encode("utf-8")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)
