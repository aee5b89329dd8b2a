"""Gateway configuration: one TOML file -> one frozen :class:`GatewayConfig` (DESIGN.md §6).

* Sections and keys are listed in ``SCHEMA``; ``config/gateway.toml`` is the embedded default
  and shows every key with a comment. ``load_config(None)`` loads that file.
* Every unknown section or key, wrong type or bad value raises :class:`ConfigError` with the
  file, the dotted key (``diameter.watchdog_seconds``) and what is wrong.
* Durations are seconds, in keys ending ``_seconds`` (floats allowed: ``budget_seconds = 0.05``).
* Optional strings (TLS files, registry token) use ``""`` for "not set".
* Environment variables override keys: ``EIR_<SECTION>_<KEY>`` upper-cased, dots of nested
  sections as ``_`` (``EIR_DIAMETER_ORIGIN_HOST``, ``EIR_POLICY_MONITOR_MODE=true``,
  ``EIR_POLICY_STATUS_TAC_UNKNOWN=WHITELISTED``). Values are parsed to the key's type: booleans
  ``true/false/1/0/yes/no/on/off``, lists comma-separated (lists of URLs: before each
  ``scheme://``, so ``sctp://10.0.0.1,10.0.0.2:3868`` stays whole). ``[registry.extra_headers]`` has no
  variables. An ``EIR_`` variable naming no key of a known section is an error.
* Relative paths: ``state.directory`` against the current directory; databases (``*.database``,
  ``registry.mirror_database``) against the state directory; input files (``tac.file``,
  ``lists.import_files``, ``registry.seed_files``, TLS files) against the config file's directory.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diameter.overload import OverloadSettings
from diameter.settings import (
    ListenEndpoint,
    LocalIdentity,
    PeerSettings,
    SctpSettings,
    TransportSettings,
)
from gateway.api.tokens import Token, check_unique, parse_token, read_token_file
from gateway.events.model import EventType
from gateway.events.syslog import FACILITIES
from gateway.n5g_eir.oauth2 import OAuth2Unavailable, load_public_keys
from gateway.n5g_eir.settings import EQUIPMENT_UNKNOWN, REJECT, HttpEndpoint, N5gEirSettings
from gateway.policy import EquipmentStatus, Policy, Reason
from registry_client.settings import RegistrySettings

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "gateway.toml"
ENV_PREFIX = "EIR_"
_DEFAULT_PORTS = {"tcp": 3868, "sctp": 3868, "tls": 5868}  # RFC 6733 §2.1
MAX_WORKERS = 256
_HTTP_PORTS = {"http": 80, "https": 443}  # n5g_eir.listen: h2c, TLS (RFC 9113 §3)
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_PG_SCHEMES = ("postgresql", "postgres")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """Invalid configuration; the message names the file (or variable), the key and the problem."""


# --- schema ----------------------------------------------------------------------------------

Check = Callable[[Any], str | None]  # returns what is wrong, or None


@dataclass(frozen=True, slots=True)
class Key:
    type: str  # "str" | "int" | "float" | "bool" | "strs" | "count" (an int or "auto")
    default: Any
    check: Check | None = None


def _key_prefix(value: str) -> str | None:
    # The keys are hash-tagged for Redis Cluster (PREFIX:clone:{IMEI}, {PREFIX:observations}:v2):
    # a brace of the prefix's would make its own hash tag.
    if not value:
        return "must not be empty"
    return "must not hold { or } (Redis Cluster hash tags)" if "{" in value or "}" in value else None


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _watchdog(v: Any) -> str | None:
    # RFC 3539 §3.4.1: Tw MUST NOT be set lower than 6 seconds.
    return None if v >= 6 else "must be at least 6 seconds (RFC 3539 §3.4.1)"


def _ip_list(v: Any) -> str | None:
    for item in v:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            return f"{item!r} is not an IP address"
    return None


def _cidr_list(v: Any) -> str | None:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not a CIDR network"
    return None


def _listen_list(v: Any) -> str | None:
    # An empty list would start a gateway that serves nothing and never becomes ready.
    if not v:
        return "must list at least one listener (tcp://, sctp:// or tls://)"
    seen: dict[tuple[str, str, int], str] = {}
    for item in v:
        try:
            e = parse_listen_url(item)
        except ValueError as exc:
            return f"{item!r}: {exc}"
        if e.port == 0:  # any free port: two such listeners never collide
            continue
        for host in e.addresses:
            # tcp:// and tls:// are both TCP sockets: one address and port cannot serve both.
            key = ("sctp" if e.transport == "sctp" else "tcp",
                   ipaddress.ip_address(host).compressed, e.port)
            if key in seen:
                return f"{item!r}: same address and port as {seen[key]!r} (listed twice)"
            seen[key] = item
    return None


def _workers(v: Any) -> str | None:
    if v == "auto":
        return None
    return None if 1 <= v <= MAX_WORKERS else f"must be 1 to {MAX_WORKERS}, or \"auto\""


def _http_listen_list(v: Any) -> str | None:
    seen: dict[tuple[str, int], str] = {}
    for item in v:
        try:
            e = parse_http_listen(item)
        except ValueError as exc:
            return f"{item!r}: {exc}"
        key = (ipaddress.ip_address(e.host).compressed, e.port)
        if e.port and key in seen:
            return f"{item!r}: same address and port as {seen[key]!r} (listed twice)"
        seen[key] = item
    return None


def _hostport(v: Any) -> str | None:
    try:
        parse_host_port(v)
    except ValueError as exc:
        return f"{v!r}: {exc}"
    return None


def _one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else f"{v!r} is not one of {', '.join(choices)}"

    return check


def _status(v: Any) -> str | None:
    return None if v in EquipmentStatus.__members__ else (
        f"{v!r} is not WHITELISTED, BLACKLISTED or GREYLISTED"
    )


def _reasons(v: Any) -> str | None:
    names = {r.value for r in Reason}
    for item in v:
        if item not in names:
            return f"{item!r} is not a reason ({', '.join(sorted(names))})"
    return None


def _tokens(v: Any) -> str | None:
    try:
        return check_unique([parse_token(t) for t in v])
    except ValueError as exc:
        return str(exc)


def _event_types(v: Any) -> str | None:
    names = [t.value for t in EventType]
    for item in v:
        if item not in names:
            return f"{item!r} is not an event type ({', '.join(names)})"
    return None


_SD_ID = re.compile(r"^(?=.{1,32}$)[A-Za-z0-9._-]+@[0-9]+(\.[0-9]+)*$")  # RFC 5424 §6.3.2, §7.2.2


def _syslog_url(v: str) -> str | None:
    """``udp://HOST:PORT`` (RFC 5426), ``tcp://`` (RFC 6587), ``tls://`` (RFC 5425)."""
    parts = urlsplit(v)
    if parts.scheme not in ("udp", "tcp", "tls"):
        return f"{v!r}: scheme must be udp, tcp or tls"
    try:
        port = parts.port
    except ValueError:
        return f"{v!r}: bad port"
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        return f"{v!r}: expected {parts.scheme}://HOST:PORT"
    return None


def _uint32(v: Any) -> str | None:
    return None if 0 <= v < 2**32 else "must be between 0 and 4294967295"


def _streams(v: Any) -> str | None:
    return None if 1 <= v <= 65535 else "must be between 1 and 65535"


def _milliseconds(v: Any) -> str | None:
    # The kernel takes whole milliseconds, and 0 would mean "leave unchanged".
    return None if 0.001 <= v <= 4_294_967 else "must be between 0.001 and 4294967 seconds"


def _heartbeat(v: Any) -> str | None:
    return None if v == 0 else _milliseconds(v)


def _retransmissions(v: Any) -> str | None:
    return None if 1 <= v <= 65535 else "must be between 1 and 65535"


_D = PeerSettings()
_I = LocalIdentity()
_T = TransportSettings()
_S = SctpSettings()
_O = OverloadSettings()


def _message_size(value: int) -> str | None:
    # RFC 6733 §3: a 24-bit Message Length, a multiple of 4; a CER needs a few hundred octets.
    return None if 4096 <= value < 1 << 24 else "must be 4096 to 16777215 (RFC 6733 §3)"


def _avp_count(value: int) -> str | None:
    # A CER needs about ten AVPs; 2**21 8-octet AVPs fill the longest message (RFC 6733 §3, §4.1).
    return None if 16 <= value <= 1 << 21 else "must be 16 to 2097152"


def _duplicate_cache(value: int) -> str | None:
    # The cache is made of one shard per 1,024 entries, all made at start-up: 10^12 (a slip of
    # the finger) asked for a billion shards and the gateway never started.
    return None if 0 <= value <= 100_000_000 else "must be 0 to 100000000"


def _doic_validity(value: int) -> str | None:
    # RFC 7683 §7.5: OC-Validity-Duration 1..86,400 s for a report in force (0 rescinds one).
    return None if 1 <= value <= 86_400 else "must be 1 to 86400 (RFC 7683 §7.5)"

_R = RegistrySettings()
_N = N5gEirSettings()


def _window(v: Any) -> str | None:
    # RFC 9113 §6.5.2 SETTINGS_INITIAL_WINDOW_SIZE: at most 2^31-1.
    return None if 0 < v < 2**31 else "must be between 1 and 2147483647"


def _setting(v: Any) -> str | None:
    # RFC 9113 §6.5.1: a SETTINGS value is 32 bits (a larger one failed every connection's
    # SETTINGS frame).
    return None if 0 < v < 2**32 else "must be between 1 and 4294967295"

SCHEMA: dict[str, dict[str, Key]] = {
    "diameter": {
        "origin_host": Key("str", _I.origin_host, lambda v: None if v else "must not be empty"),
        "origin_realm": Key("str", _I.origin_realm, lambda v: None if v else "must not be empty"),
        "host_ip_addresses": Key("strs", list(_I.host_ip_addresses), _ip_list),
        "vendor_id": Key("int", _I.vendor_id, _uint32),
        "product_name": Key("str", _I.product_name),
        "firmware_revision": Key("int", _I.firmware_revision, _uint32),
        "origin_state_id": Key("int", 0, _uint32),
        "listen": Key("strs", ["tcp://127.0.0.1:3868"], _listen_list),
        "tls_cert": Key("str", ""),
        "tls_key": Key("str", ""),
        "tls_ca": Key("str", ""),
        "tls_verify_client": Key("bool", _T.tls_verify_client),
        "tls_verify_origin_host": Key("bool", _D.tls_verify_origin_host),
        "watchdog_seconds": Key("float", _D.watchdog_interval, _watchdog),
        "watchdog_jitter_seconds": Key("float", _D.watchdog_jitter, _non_negative),
        "cer_timeout_seconds": Key("float", _D.cer_timeout, _positive),
        "cea_timeout_seconds": Key("float", _D.cea_timeout, _positive),
        "dpa_timeout_seconds": Key("float", _D.dpa_timeout, _positive),
        "disconnect_linger_seconds": Key("float", _D.disconnect_linger, _positive),
        "duplicate_window_seconds": Key("float", _D.duplicate_window, _non_negative),
        "duplicate_cache_size": Key("int", _D.duplicate_cache_size, _duplicate_cache),
        "max_in_flight_per_peer": Key("int", _D.max_in_flight_per_peer, _positive),
        "max_in_flight_total": Key("int", _T.max_in_flight_total, _positive),
        "max_connections": Key("int", _T.max_connections, _non_negative),
        "write_high_water_bytes": Key("int", _T.write_high_water, _positive),
        "write_low_water_bytes": Key("int", _T.write_low_water, _non_negative),
        "read_budget_messages": Key("int", _T.read_budget, _positive),
        "max_message_size_bytes": Key("int", 65_536, _message_size),
        "max_avps": Key("int", _D.max_avps, _avp_count),
        "malformed_limit": Key("int", _D.malformed_limit, _non_negative),
        "malformed_window_seconds": Key("float", _D.malformed_window, _positive),
        "overload_target_delay_seconds": Key("float", 0.1, _non_negative),
        "overload_interval_seconds": Key("float", _O.interval, _positive),
        "doic": Key("bool", _O.doic),
        "doic_validity_seconds": Key("int", _O.validity_duration, _doic_validity),
        "doic_peers": Key("strs", []),
        "served_realms": Key("strs", []),
        "allowed_hosts": Key("strs", []),
        "allowed_realms": Key("strs", []),
        "allowed_networks": Key("strs", list(_D.allowed_networks), _cidr_list),
        "sctp_streams_out": Key("int", _S.streams_out, _streams),
        "sctp_streams_in": Key("int", _S.streams_in, _streams),
        "sctp_rto_initial_seconds": Key("float", _S.rto_initial, _milliseconds),
        "sctp_rto_min_seconds": Key("float", _S.rto_min, _milliseconds),
        "sctp_rto_max_seconds": Key("float", _S.rto_max, _milliseconds),
        "sctp_heartbeat_interval_seconds": Key("float", _S.heartbeat_interval, _heartbeat),
        "sctp_path_max_retransmissions": Key("int", _S.path_max_retransmissions, _retransmissions),
        "sctp_nodelay": Key("bool", _S.nodelay),
        "strict_avp_flags": Key("bool", _D.strict_avp_flags),
    },
    "process": {"workers": Key("count", 1, _workers)},
    "n5g_eir": {
        "listen": Key("strs", ["http://127.0.0.1:8080"], _http_listen_list),
        "tls_cert": Key("str", ""),
        "tls_key": Key("str", ""),
        "tls_ca": Key("str", ""),
        "tls_verify_client": Key("bool", _N.tls_verify_client),
        "allowed_networks": Key("strs", list(_N.allowed_networks), _cidr_list),
        "max_connections": Key("int", _N.max_connections, _non_negative),
        "max_concurrent_streams": Key("int", _N.max_concurrent_streams, _setting),
        "max_header_list_bytes": Key("int", _N.max_header_list_bytes, _setting),
        "initial_window_bytes": Key("int", _N.initial_window_bytes, _window),
        "max_uri_bytes": Key("int", _N.max_uri_bytes, _positive),
        "max_in_flight": Key("int", _N.max_in_flight, _positive),
        "max_in_flight_per_connection": Key("int", _N.max_in_flight_per_connection, _positive),
        "retry_after_seconds": Key("float", _N.retry_after_seconds, _positive),
        "non_imei_pei": Key("str", _N.non_imei_pei, _one_of(
            *EquipmentStatus.__members__, EQUIPMENT_UNKNOWN, REJECT)),
        "shutdown_grace_seconds": Key("float", _N.shutdown_grace_seconds, _non_negative),
        "idle_timeout_seconds": Key("float", _N.idle_timeout_seconds, _non_negative),
        "ping_interval_seconds": Key("float", _N.ping_interval_seconds, _non_negative),
        "ping_timeout_seconds": Key("float", _N.ping_timeout_seconds, _positive),
        "oauth2": Key("bool", _N.oauth2),
        "oauth2_keys": Key("strs", []),
        "oauth2_audience": Key("strs", list(_N.oauth2_audience)),
        "oauth2_issuers": Key("strs", []),
        "oauth2_subjects": Key("strs", []),
    },
    "metrics": {"listen": Key("str", "127.0.0.1:9868", _hostport)},
    "state": {
        "directory": Key("str", "var", lambda v: None if v else "must not be empty"),
        "backend": Key("str", "sqlite", _one_of("sqlite", "postgresql")),
        "dsn": Key("str", "", lambda v: None if not v or urlsplit(v).scheme in _PG_SCHEMES
                   else "must be a postgresql:// or postgres:// URL, or \"\""),
    },
    "tac": {"file": Key("str", ""), "database": Key("str", "tac.sqlite")},
    "lists": {
        "database": Key("str", "lists.sqlite"),
        "import_files": Key("strs", []),
        "poll_interval_seconds": Key("float", 5.0, _non_negative),
        "shared_snapshot": Key("bool", True),
    },
    "policy": {
        "monitor_mode": Key("bool", False),
        "unknown_equipment": Key("strs", [], _reasons),
        "decision_cache_size": Key("int", 65_536, _non_negative),
    },
    "policy.status": {r.value: Key("str", s.name, _status) for r, s in Policy().status.items()},
    "clone_detection": {
        "enabled": Key("bool", False),
        "threshold": Key("int", 10, _positive),
        "window_seconds": Key("float", 86_400.0, _positive),
        "max_imeis": Key("int", 100_000, _positive),
    },
    "shared": {
        "redis_url": Key("str", "", lambda v: None if not v or urlsplit(v).scheme in _REDIS_SCHEMES
                         else "must be a redis://, rediss:// or unix:// URL, or \"\""),
        "key_prefix": Key("str", "eir", _key_prefix),
        "budget_seconds": Key("float", 0.05, _positive),
        "timeout_seconds": Key("float", 1.0, _positive),
        "retry_seconds": Key("float", 1.0, _positive),
        "observation_stream": Key("bool", False),
        "redis_cluster": Key("bool", False),
    },
    "observations": {
        "enabled": Key("bool", True),
        "database": Key("str", "observations.sqlite"),
        "queue_size": Key("int", 100_000, _positive),
        "batch_size": Key("int", 1_000, _positive),
        "flush_interval_seconds": Key("float", 1.0, _positive),
        "writer": Key("str", "process", _one_of("process", "thread")),
    },
    "registry": {
        "backend": Key("str", _R.backend, _one_of("local", "http", "none")),
        "database": Key("str", "registry.sqlite"),
        "seed_files": Key("strs", []),
        "url": Key("str", _R.url, lambda v: None if urlsplit(v).scheme in ("http", "https")
                   else "must be an http:// or https:// URL"),
        "token": Key("str", ""),
        "tls_ca": Key("str", ""),
        "tls_cert": Key("str", ""),
        "tls_key": Key("str", ""),
        "budget_seconds": Key("float", _R.budget, _positive),
        "request_timeout_seconds": Key("float", _R.request_timeout, _positive),
        "retries": Key("int", _R.retries, _non_negative),
        "backoff_base_seconds": Key("float", _R.backoff_base, _non_negative),
        "backoff_max_seconds": Key("float", _R.backoff_max, _non_negative),
        "cache_size": Key("int", _R.cache_size, _non_negative),
        "cache_ttl_seconds": Key("float", _R.cache_ttl, _non_negative),
        "negative_ttl_seconds": Key("float", _R.negative_ttl, _non_negative),
        "batch_window_seconds": Key("float", _R.batch_window, _non_negative),
        "batch_max": Key("int", _R.batch_max, _positive),
        "breaker_failure_threshold": Key("int", _R.breaker_failure_threshold, _positive),
        "breaker_reset_timeout_seconds": Key("float", _R.breaker_reset_timeout, _positive),
        "mirror": Key("bool", _R.mirror),
        "mirror_database": Key("str", "registry-mirror.sqlite"),
        "mirror_interval_seconds": Key("float", _R.mirror_interval, _positive),
        "mirror_page_size": Key("int", _R.mirror_page_size, _positive),
        "mirror_max_staleness_seconds": Key("float", _R.mirror_max_staleness, _non_negative),
        "max_connections": Key("int", _R.max_connections, _positive),
    },
    "api": {
        "listen": Key("str", "127.0.0.1:9869", lambda v: None if v == "" else _hostport(v)),
        "tokens": Key("strs", [], _tokens),
        "token_file": Key("str", ""),
        "tls_cert": Key("str", ""),
        "tls_key": Key("str", ""),
        "max_import_bytes": Key("int", 2**31, _positive),
        "header_timeout_seconds": Key("float", 30.0, _non_negative),
        "body_timeout_seconds": Key("float", 30.0, _non_negative),
        "max_connections": Key("int", 64, _non_negative),
    },
    "events": {
        "types": Key("strs", [], _event_types),
        "queue_size": Key("int", 10_000, _positive),
        "mask_imsi": Key("bool", True),
        "new_imsi_memory": Key("int", 100_000, _positive),
        "syslog": Key("str", "", lambda v: None if v == "" else _syslog_url(v)),
        "syslog_facility": Key("str", "local0", _one_of(*FACILITIES)),
        "syslog_hostname": Key("str", ""),
        "syslog_sd_id": Key("str", "eir@32473", lambda v: None if _SD_ID.match(v) else
                            "must be NAME@ENTERPRISE-NUMBER (RFC 5424 §7.2.2), e.g. eir@32473"),
        "syslog_tls_ca": Key("str", ""),
        "syslog_tls_cert": Key("str", ""),
        "syslog_tls_key": Key("str", ""),
        "webhook_url": Key("str", "", lambda v: None if v == "" or urlsplit(v).scheme in (
            "http", "https") else "must be an http:// or https:// URL"),
        "webhook_secret": Key("str", ""),
        "webhook_timeout_seconds": Key("float", 5.0, _positive),
        "webhook_retries": Key("int", 3, _non_negative),
        "webhook_backoff_seconds": Key("float", 0.5, _non_negative),
    },
    "logging": {
        "level": Key("str", "INFO", lambda v: None if v.upper() in _LOG_LEVELS
                     else f"{v!r} is not one of {', '.join(_LOG_LEVELS)}"),
        "format": Key("str", "text", _one_of("text", "json")),
        "mask_imsi": Key("bool", True),
    },
}
# Free-form tables: name -> string value.
FREE_TABLES = ("registry.extra_headers",)


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.replace('.', '_')}_{key}".upper()


# --- parsing helpers -------------------------------------------------------------------------


def parse_listen_url(url: str) -> ListenEndpoint:
    """``tcp://127.0.0.1:3868``, ``sctp://[::1]:3868``, ``tls://0.0.0.0:5868`` (port optional);
    SCTP may list several local addresses of one endpoint (multi-homing, RFC 4960 §6.4):
    ``sctp://10.0.0.1,10.0.0.2:3868``."""
    scheme, _, rest = url.partition("://")
    hosts, port = _split_port(rest)
    if "," not in hosts:
        return ListenEndpoint(*_parse_address_url(url, _DEFAULT_PORTS))
    if scheme != "sctp":
        raise ValueError("several addresses: only sctp:// (multi-homing)")
    each = [_parse_address_url(f"sctp://{h}{port}", _DEFAULT_PORTS) for h in hosts.split(",")]
    addresses = [host for _, host, _ in each]
    if len({ipaddress.ip_address(a).version for a in addresses}) > 1:
        raise ValueError("mixes IPv4 and IPv6 addresses")
    if len(set(addresses)) < len(addresses):
        raise ValueError("lists an address twice")
    return ListenEndpoint("sctp", addresses[0], each[0][2], tuple(addresses[1:]))


def _split_port(netloc: str) -> tuple[str, str]:
    """``HOSTS:PORT`` -> (``HOSTS``, ``:PORT``); a colon inside brackets belongs to an address."""
    colon = netloc.rfind(":")
    if colon > netloc.rfind("]"):
        return netloc[:colon], netloc[colon:]
    return netloc, ""


def parse_http_listen(url: str) -> HttpEndpoint:
    """``http://127.0.0.1:8080`` (h2c, prior knowledge), ``https://[::1]:8443`` (TLS, ALPN h2)."""
    return HttpEndpoint(*_parse_address_url(url, _HTTP_PORTS))


def _parse_address_url(url: str, default_ports: Mapping[str, int]) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in default_ports:
        raise ValueError(f"scheme must be {', '.join(default_ports)}")
    if parts.path or parts.query or parts.fragment:
        raise ValueError("only scheme://address:port is allowed")
    host = parts.hostname
    if not host:
        raise ValueError("no address")
    try:
        ipaddress.ip_address(host)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad address or port ({exc})") from None
    if port is None:
        port = default_ports[parts.scheme]
    if not 0 <= port <= 65535:  # 0: any free port (tests, side-by-side instances)
        raise ValueError("port must be 0-65535")
    return parts.scheme, host, port


def parse_host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:9868`` or ``[::1]:9868``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("expected ADDRESS:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ipaddress.ip_address(host)  # ValueError names the address
    port = int(port_text)
    if not 0 <= port <= 65535:  # 0: any free port (tests, side-by-side instances)
        raise ValueError("port must be 0-65535")
    return host, port


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _from_env(text: str, kind: str) -> Any:
    if kind == "str":
        return text
    if kind == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind == "int":
        return int(text.strip())
    if kind == "float":
        value = float(text.strip())
        if not math.isfinite(value):  # "inf", "nan", "1e400": no duration or rate is
            raise ValueError(f"expected a finite number, not {text.strip()!r}")
        return value
    if kind == "count":
        text = text.strip()
        return text if text == "auto" else int(text)
    # A list of URLs is cut before each scheme only: sctp://10.0.0.1,10.0.0.2:3868 is one item.
    separator = _URL_SEPARATOR if "://" in text else ","
    return [item.strip() for item in re.split(separator, text) if item.strip()]


_URL_SEPARATOR = r",(?=\s*[a-z][a-z0-9+.-]*://)"


def _type_problem(value: Any, kind: str) -> str | None:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "count": value == "auto" or (isinstance(value, int) and not isinstance(value, bool)),
    }[kind]
    if ok and kind == "float" and not math.isfinite(value):
        # TOML has inf and nan: no duration or rate here is either (an inf
        # retry_after_seconds crashed the start-up in round()).
        return f"must be a finite number, not {value!r}"
    if ok:
        return None
    names = {"str": "a string", "bool": "true or false", "int": "an integer",
             "float": "a number", "strs": "a list of strings",
             "count": 'an integer or "auto"'}
    return f"must be {names[kind]}, not {type(value).__name__} {value!r}"


# --- the configuration object ----------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, as a container limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    workers: int = 1  # worker processes serving S13; 1: the gateway runs in this process


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9868


@dataclass(frozen=True, slots=True)
class TacConfig:
    file: Path | None  # imported at start when changed; None: use the database as it is
    database: Path


@dataclass(frozen=True, slots=True)
class ListsConfig:
    database: Path
    import_files: tuple[Path, ...] = ()
    poll_interval: float = 5.0  # seconds between version polls; 0 = SIGHUP only
    # PostgreSQL state: exact IMEIs in files of the state directory every worker maps
    shared_snapshot: bool = True


@dataclass(frozen=True, slots=True)
class CloneDetectionConfig:
    enabled: bool = False
    threshold: int = 10  # more than this many distinct IMSIs ...
    window: float = 86_400.0  # ... within this many seconds
    max_imeis: int = 100_000  # IMEIs tracked in memory (LRU)


@dataclass(frozen=True, slots=True)
class ObservationsConfig:
    enabled: bool
    database: Path
    queue_size: int = 100_000
    batch_size: int = 1_000
    flush_interval: float = 1.0
    writer: str = "process"  # "process" | "thread": who writes the log (and drains the stream)


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where lists, observations and the TAC database live: SQLite files in the state
    directory, or one PostgreSQL database shared by every worker and host."""

    backend: str = "sqlite"  # "sqlite" | "postgresql"
    dsn: str = ""  # postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE

    @property
    def postgresql(self) -> bool:
        return self.backend == "postgresql"


@dataclass(frozen=True, slots=True)
class SharedConfig:
    """State shared by every worker and host: Redis for clone detection (off: "")."""

    redis_url: str = ""
    key_prefix: str = "eir"
    budget: float = 0.05  # the most a check waits for the shared clone count
    timeout: float = 1.0  # one round trip
    retry_interval: float = 1.0  # while Redis is unreachable
    observation_stream: bool = False  # observations through the stream PREFIX:observations
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"  # "text" | "json"
    mask_imsi: bool = True


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Decision events (gateway/events); no types or no sink: off."""

    types: tuple[str, ...] = ()
    queue_size: int = 10_000
    mask_imsi: bool = True
    new_imsi_memory: int = 100_000
    syslog: str = ""  # udp:// | tcp:// | tls:// HOST:PORT; "" = none
    syslog_facility: str = "local0"
    syslog_hostname: str = ""
    syslog_sd_id: str = "eir@32473"
    syslog_tls_ca: str | None = None
    syslog_tls_cert: str | None = None  # the gateway's own certificate (RFC 5425 §4.2.1)
    syslog_tls_key: str | None = None
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    webhook_backoff: float = 0.5


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The provisioning API (gateway/api); ``host`` None: not served."""

    host: str | None = None
    port: int = 0
    tokens: tuple[Token, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    max_import_bytes: int = 2**31
    imports_dir: Path = Path("var/imports")  # uploads wait here for their import job
    # A whole request head within this of connecting or of the last response, or closed; 0: never.
    header_timeout_seconds: float = 30.0
    # A request body that stops coming (no part of it for this long) gets 408; 0: never.
    body_timeout_seconds: float = 30.0
    # Open connections at most (0: no limit); one more gets 503 and is closed at accept.
    max_connections: int = 64


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    source: Path  # the TOML file loaded
    state_dir: Path
    peer: PeerSettings
    transport: TransportSettings
    process: ProcessConfig
    overload: OverloadSettings
    metrics: MetricsConfig
    tac: TacConfig
    lists: ListsConfig
    policy: Policy
    clone_detection: CloneDetectionConfig
    observations: ObservationsConfig
    shared: SharedConfig
    registry: RegistrySettings
    logging: LoggingConfig
    n5g_eir: N5gEirSettings = field(default_factory=N5gEirSettings)
    api: ApiConfig = field(default_factory=ApiConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    values: Mapping[str, Any] = field(default_factory=dict, compare=False)  # "section.key" -> value
    # "section.key" -> the EIR_* variable that set it: errors found later name the variable.
    env_vars: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def identity(self) -> LocalIdentity:
        return self.peer.identity

    def where(self, dotted: str) -> str:
        """Where a key's value came from, for error messages: the variable or the file."""
        return _where(self.source, self.env_vars, dotted)


def _where(file: Path, env_vars: Mapping[str, str], dotted: str) -> str:
    var = env_vars.get(dotted)
    return f"environment variable {var} ({dotted})" if var else f"{file}: {dotted}"


def _process_workers(
    value: int | str, clone_detection: bool, shared: bool, where: Callable[[str], str]
) -> int:
    workers = available_cores() if value == "auto" else int(value)
    if workers > 1 and clone_detection and not shared:
        # Its own tracker, a worker would count only the IMSIs it saw itself.
        raise ConfigError(
            f"{where('clone_detection.enabled')}: clone detection with {workers} workers "
            "(process.workers) needs shared.redis_url: in one process it counts that "
            "process's checks only"
        )
    return workers


def with_workers(config: GatewayConfig, text: str) -> GatewayConfig:
    """``run --workers N|auto``: ``config`` with process.workers replaced, checked as the key."""
    try:
        value: int | str = _from_env(text, "count")
    except ValueError:
        raise ConfigError(f"--workers {text}: must be an integer or \"auto\"") from None
    problem = _workers(value)
    if problem:
        raise ConfigError(f"--workers {text}: {problem}")
    workers = _process_workers(
        value, config.clone_detection.enabled, bool(config.shared.redis_url),
        lambda key: f"--workers {text}: {config.where(key)}",
    )
    return replace(config, process=ProcessConfig(workers))


def _api(
    v: dict[str, Any], inp: Callable[[str], Path], state: Path, where: Callable[[str], str]
) -> ApiConfig:
    tokens = [parse_token(t) for t in v["api.tokens"]]
    if v["api.token_file"]:
        try:
            tokens += read_token_file(inp(v["api.token_file"]))
        except ValueError as exc:
            raise ConfigError(f"{where('api.token_file')}: {exc}") from None
    problem = check_unique(tokens)
    if problem:
        raise ConfigError(f"{where('api.token_file')}: {problem}")
    cert, key = v["api.tls_cert"], v["api.tls_key"]
    if bool(cert) != bool(key):
        raise ConfigError(f"{where('api.tls_cert')}: TLS needs both api.tls_cert and api.tls_key")
    host, port = parse_host_port(v["api.listen"]) if v["api.listen"] else (None, 0)
    return ApiConfig(
        host, port, tuple(tokens),
        str(inp(cert)) if cert else None, str(inp(key)) if key else None,
        v["api.max_import_bytes"], state / "imports",
        header_timeout_seconds=v["api.header_timeout_seconds"],
        body_timeout_seconds=v["api.body_timeout_seconds"],
        max_connections=v["api.max_connections"],
    )


def _check_syslog_tls(v: dict[str, Any], where: Callable[[str], str]) -> None:
    """TLS files only with a tls:// receiver (before their contents are checked)."""
    ca, cert, key = (v[f"events.syslog_tls_{k}"] for k in ("ca", "cert", "key"))
    if (ca or cert or key) and not v["events.syslog"].startswith("tls:"):
        name = "ca" if ca else "cert" if cert else "key"
        raise ConfigError(f"{where(f'events.syslog_tls_{name}')}: only for a tls:// syslog")
    if key and not cert:
        raise ConfigError(f"{where('events.syslog_tls_key')}: needs syslog_tls_cert")


def _events(
    v: dict[str, Any], inp: Callable[[str], Path], where: Callable[[str], str]
) -> EventsConfig:
    types = tuple(v["events.types"])
    if types and not (v["events.syslog"] or v["events.webhook_url"]):
        raise ConfigError(f"{where('events.types')}: events need a sink "
                          "(events.syslog or events.webhook_url)")
    if v["events.webhook_url"] and len(v["events.webhook_secret"]) < 16:
        raise ConfigError(f"{where('events.webhook_secret')}: a webhook needs a secret of at "
                          "least 16 characters (the HMAC-SHA256 key)")
    ca, cert, key = (v[f"events.syslog_tls_{k}"] for k in ("ca", "cert", "key"))
    return EventsConfig(
        types, v["events.queue_size"], v["events.mask_imsi"], v["events.new_imsi_memory"],
        v["events.syslog"], v["events.syslog_facility"], v["events.syslog_hostname"],
        v["events.syslog_sd_id"], str(inp(ca)) if ca else None,
        str(inp(cert)) if cert else None, str(inp(key)) if key else None,
        v["events.webhook_url"], v["events.webhook_secret"], v["events.webhook_timeout_seconds"],
        v["events.webhook_retries"], v["events.webhook_backoff_seconds"],
    )


# --- loading ---------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Load and validate ``path`` (None: the embedded default), then apply ``EIR_*`` variables."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    values, free = _collect(file, data)
    env_vars = _apply_env(values, os.environ if env is None else env)
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        spec = SCHEMA[section][key]
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{_where(file, env_vars, dotted)}: {problem}")
    return _build(file, values, free, env_vars)


def _collect(file: Path, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    values = {f"{s}.{k}": spec.default for s, keys in SCHEMA.items() for k, spec in keys.items()}
    free: dict[str, dict[str, str]] = {t: {} for t in FREE_TABLES}

    def walk(section: str, table: dict[str, Any]) -> None:
        keys = SCHEMA[section]
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted in SCHEMA:
                if not isinstance(value, dict):
                    raise ConfigError(f"{file}: {dotted}: must be a table")
                walk(dotted, value)
            elif dotted in free:
                if not isinstance(value, dict):
                    raise ConfigError(f"{file}: {dotted}: must be a table")
                for name, text in value.items():
                    if not isinstance(text, str):
                        raise ConfigError(f"{file}: {dotted}.{name}: must be a string")
                    free[dotted][name] = text
            elif key not in keys:
                raise ConfigError(f"{file}: {dotted}: unknown key")
            else:
                kind = keys[key].type
                problem = _type_problem(value, kind)
                if problem:
                    raise ConfigError(f"{file}: {dotted}: {problem}")
                values[dotted] = float(value) if kind == "float" else value

    for section, table in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{file}: [{section}]: unknown section")
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {section}: must be a table")
        walk(section, table)
    return values, free


def _apply_env(values: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply the ``EIR_*`` variables; returns "section.key" -> variable for those applied."""
    applied: dict[str, str] = {}
    names = {env_name(s, k): (f"{s}.{k}", spec) for s, keys in SCHEMA.items()
             for k, spec in keys.items()}
    prefixes = tuple(env_name(s, "") for s in SCHEMA)
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        hit = names.get(var)
        if hit is None:
            if var.startswith(prefixes):
                raise ConfigError(f"environment variable {var}: names no configuration key")
            continue
        dotted, spec = hit
        try:
            value = _from_env(text, spec.type)
        except ValueError as exc:
            raise ConfigError(f"environment variable {var} ({dotted}): {exc}") from None
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"environment variable {var} ({dotted}): {problem}")
        values[dotted] = value
        applied[dotted] = var
    return applied


_INPUT_FILES = (
    "diameter.tls_cert", "diameter.tls_key", "diameter.tls_ca", "tac.file", "lists.import_files",
    "n5g_eir.tls_cert", "n5g_eir.tls_key", "n5g_eir.tls_ca", "n5g_eir.oauth2_keys",
    "registry.seed_files", "registry.tls_ca", "registry.tls_cert", "registry.tls_key",
    "api.token_file", "api.tls_cert", "api.tls_key", "events.syslog_tls_ca",
    "events.syslog_tls_cert", "events.syslog_tls_key",
)


def _tls_problem(
    prefix: str, cert: str | None, key: str | None, ca: str | None
) -> tuple[str, str] | None:
    """(key, what is wrong) when a TLS file is not usable PEM; found here, the error names the
    key and the file (ssl's own error at bind time says only "[SSL] PEM lib")."""
    if ca is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError) as exc:
            return f"{prefix}tls_ca", f"{ca} is not a PEM CA certificate bundle ({exc})"
    if cert is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError) as exc:
        return f"{prefix}tls_cert", f"{cert} is not a PEM certificate ({exc})"
    try:
        # The callback stops OpenSSL prompting on the terminal for an encrypted key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        path = key or cert
        with open(path, "rb") as handle:
            if b"ENCRYPTED" in handle.read():
                return None  # a passphrase-protected key: left to the listener to load
        if "KEY_VALUES_MISMATCH" in str(exc):
            return f"{prefix}tls_key", f"{path} does not match the certificate {cert}"
        return (f"{prefix}tls_key" if key else f"{prefix}tls_cert",
                f"{path} is not a PEM private key ({exc})")
    return None


def _check_oauth2(settings: N5gEirSettings, where: Callable[[str], str]) -> None:
    """Keys that load (named when one does not), at least one, and an audience to check."""
    if not settings.oauth2_keys:
        raise ConfigError(f"{where('n5g_eir.oauth2_keys')}: oauth2 needs at least one public key")
    if not settings.oauth2_audience:
        raise ConfigError(f"{where('n5g_eir.oauth2_audience')}: must name 5G_EIR and/or this "
                          "NF's instance ID")
    try:
        load_public_keys(settings.oauth2_keys)
    except (OAuth2Unavailable, ValueError) as exc:
        raise ConfigError(f"{where('n5g_eir.oauth2_keys')}: {exc}") from None


def _build(
    file: Path, v: dict[str, Any], free: dict[str, dict[str, str]],
    env_vars: Mapping[str, str] | None = None,
) -> GatewayConfig:
    env_vars = env_vars or {}

    def where(dotted: str) -> str:
        return _where(file, env_vars, dotted)

    base = file.resolve().parent
    state = Path(v["state.directory"])  # relative: against the current directory

    def data(p: str) -> Path:
        return state / p

    def inp(p: str) -> Path:
        return base / p

    def opt(p: str) -> str | None:
        return str(inp(p)) if p else None

    # Input files must exist at start-up (databases are created when missing).
    for dotted in _INPUT_FILES:
        names = v[dotted] if isinstance(v[dotted], list) else [v[dotted]]
        for name in names:
            if name and not inp(name).is_file():
                raise ConfigError(f"{where(dotted)}: file {inp(name)} does not exist")

    listen = tuple(parse_listen_url(u) for u in v["diameter.listen"])
    # RFC 4960 §15: RTO.Min <= RTO.Initial <= RTO.Max.
    if not v["diameter.sctp_rto_min_seconds"] <= v["diameter.sctp_rto_initial_seconds"] \
            <= v["diameter.sctp_rto_max_seconds"]:
        raise ConfigError(
            f"{where('diameter.sctp_rto_initial_seconds')}: sctp_rto_min_seconds <= "
            "sctp_rto_initial_seconds <= sctp_rto_max_seconds does not hold"
        )
    sctp = SctpSettings(
        streams_out=v["diameter.sctp_streams_out"],
        streams_in=v["diameter.sctp_streams_in"],
        rto_initial=v["diameter.sctp_rto_initial_seconds"],
        rto_min=v["diameter.sctp_rto_min_seconds"],
        rto_max=v["diameter.sctp_rto_max_seconds"],
        heartbeat_interval=v["diameter.sctp_heartbeat_interval_seconds"],
        path_max_retransmissions=v["diameter.sctp_path_max_retransmissions"],
        nodelay=v["diameter.sctp_nodelay"],
    )
    tls_cert, tls_key = opt(v["diameter.tls_cert"]), opt(v["diameter.tls_key"])
    if any(e.transport == "tls" for e in listen) and not (tls_cert and tls_key):
        raise ConfigError(
            f"{where('diameter.tls_cert')}: a tls:// listener needs tls_cert and tls_key"
        )
    if any(u.startswith("https:") for u in v["n5g_eir.listen"]) and not (
        v["n5g_eir.tls_cert"] and v["n5g_eir.tls_key"]
    ):
        raise ConfigError(
            f"{where('n5g_eir.tls_cert')}: an https:// listener needs tls_cert and tls_key"
        )
    _check_syslog_tls(v, where)
    for prefix in ("diameter.", "registry.", "n5g_eir.", "api.", "events.syslog_"):
        problem = _tls_problem(
            prefix, opt(v[f"{prefix}tls_cert"]), opt(v[f"{prefix}tls_key"]),
            opt(v.get(f"{prefix}tls_ca", "")),
        )
        if problem is not None:
            raise ConfigError(f"{where(problem[0])}: {problem[1]}")
    if v["diameter.write_low_water_bytes"] > v["diameter.write_high_water_bytes"]:
        raise ConfigError(
            f"{where('diameter.write_low_water_bytes')}: above write_high_water_bytes"
        )
    identity = LocalIdentity(
        origin_host=v["diameter.origin_host"],
        origin_realm=v["diameter.origin_realm"],
        host_ip_addresses=tuple(v["diameter.host_ip_addresses"]),
        vendor_id=v["diameter.vendor_id"],
        product_name=v["diameter.product_name"],
        firmware_revision=v["diameter.firmware_revision"],
        origin_state_id=v["diameter.origin_state_id"] or None,
    )
    peer = PeerSettings(
        identity=identity,
        watchdog_interval=v["diameter.watchdog_seconds"],
        watchdog_jitter=v["diameter.watchdog_jitter_seconds"],
        cer_timeout=v["diameter.cer_timeout_seconds"],
        dpa_timeout=v["diameter.dpa_timeout_seconds"],
        disconnect_linger=v["diameter.disconnect_linger_seconds"],
        cea_timeout=v["diameter.cea_timeout_seconds"],
        duplicate_window=v["diameter.duplicate_window_seconds"],
        duplicate_cache_size=v["diameter.duplicate_cache_size"],
        max_in_flight_per_peer=v["diameter.max_in_flight_per_peer"],
        malformed_limit=v["diameter.malformed_limit"],
        max_message_size=v["diameter.max_message_size_bytes"],
        max_avps=v["diameter.max_avps"],
        malformed_window=v["diameter.malformed_window_seconds"],
        served_realms=tuple(v["diameter.served_realms"]),
        allowed_hosts=tuple(v["diameter.allowed_hosts"]),
        allowed_realms=tuple(v["diameter.allowed_realms"]),
        allowed_networks=tuple(v["diameter.allowed_networks"]),
        strict_avp_flags=v["diameter.strict_avp_flags"],
        tls_verify_origin_host=v["diameter.tls_verify_origin_host"],
    )
    transport = TransportSettings(
        listen=listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=opt(v["diameter.tls_ca"]),
        tls_verify_client=v["diameter.tls_verify_client"],
        max_in_flight_total=v["diameter.max_in_flight_total"],
        max_connections=v["diameter.max_connections"],
        write_high_water=v["diameter.write_high_water_bytes"],
        write_low_water=v["diameter.write_low_water_bytes"],
        sctp=sctp,
        read_budget=v["diameter.read_budget_messages"],
    )
    host, port = parse_host_port(v["metrics.listen"])
    if v["shared.redis_url"] and importlib.util.find_spec("redis") is None:
        raise ConfigError(
            f"{where('shared.redis_url')}: needs the redis package "
            "(pip install 'eir-gateway[shared]')"
        )
    if v["shared.redis_cluster"] and v["shared.redis_url"]:
        cluster_url = urlsplit(v["shared.redis_url"])
        if cluster_url.scheme not in ("redis", "rediss"):
            raise ConfigError(f"{where('shared.redis_url')}: shared.redis_cluster needs a "
                              "redis:// or rediss:// URL naming one node of the cluster")
        if cluster_url.path not in ("", "/", "/0"):
            raise ConfigError(f"{where('shared.redis_url')}: a Redis Cluster has database 0 "
                              "only")
    if v["state.backend"] == "postgresql":
        if not v["state.dsn"]:
            raise ConfigError(f"{where('state.dsn')}: required with state.backend = \"postgresql\"")
        if importlib.util.find_spec("asyncpg") is None:
            raise ConfigError(
                f"{where('state.backend')}: needs the asyncpg package "
                "(pip install 'eir-gateway[postgresql]')"
            )
    if v["state.backend"] == "postgresql":
        if not v["state.dsn"]:
            raise ConfigError(
                f"{where('state.dsn')}: required with state.backend = \"postgresql\""
            )
        if importlib.util.find_spec("asyncpg") is None:
            raise ConfigError(
                f"{where('state.backend')}: needs the asyncpg package "
                "(pip install 'eir-gateway[postgresql]')"
            )
    workers = _process_workers(
        v["process.workers"], v["clone_detection.enabled"], bool(v["shared.redis_url"]), where
    )
    n5g_eir = N5gEirSettings(
        listen=tuple(parse_http_listen(u) for u in v["n5g_eir.listen"]),
        tls_cert=opt(v["n5g_eir.tls_cert"]),
        tls_key=opt(v["n5g_eir.tls_key"]),
        tls_ca=opt(v["n5g_eir.tls_ca"]),
        tls_verify_client=v["n5g_eir.tls_verify_client"],
        allowed_networks=tuple(v["n5g_eir.allowed_networks"]),
        max_connections=v["n5g_eir.max_connections"],
        max_concurrent_streams=v["n5g_eir.max_concurrent_streams"],
        max_header_list_bytes=v["n5g_eir.max_header_list_bytes"],
        initial_window_bytes=v["n5g_eir.initial_window_bytes"],
        max_uri_bytes=v["n5g_eir.max_uri_bytes"],
        max_in_flight=v["n5g_eir.max_in_flight"],
        max_in_flight_per_connection=v["n5g_eir.max_in_flight_per_connection"],
        retry_after_seconds=v["n5g_eir.retry_after_seconds"],
        non_imei_pei=v["n5g_eir.non_imei_pei"],
        shutdown_grace_seconds=v["n5g_eir.shutdown_grace_seconds"],
        idle_timeout_seconds=v["n5g_eir.idle_timeout_seconds"],
        ping_interval_seconds=v["n5g_eir.ping_interval_seconds"],
        ping_timeout_seconds=v["n5g_eir.ping_timeout_seconds"],
        oauth2=v["n5g_eir.oauth2"],
        oauth2_keys=tuple(str(inp(p)) for p in v["n5g_eir.oauth2_keys"]),
        oauth2_audience=tuple(v["n5g_eir.oauth2_audience"]),
        oauth2_issuers=tuple(v["n5g_eir.oauth2_issuers"]),
        oauth2_subjects=tuple(v["n5g_eir.oauth2_subjects"]),
    )
    if n5g_eir.oauth2:
        _check_oauth2(n5g_eir, where)
    policy = Policy.build(
        {Reason(k): EquipmentStatus[v[f"policy.status.{k}"]] for k in SCHEMA["policy.status"]},
        (Reason(r) for r in v["policy.unknown_equipment"]),
        v["policy.monitor_mode"],
    )
    registry = RegistrySettings(
        backend=v["registry.backend"],
        database=str(data(v["registry.database"])),
        seed_files=tuple(str(inp(p)) for p in v["registry.seed_files"]),
        url=v["registry.url"],
        token=v["registry.token"] or None,
        tls_ca=opt(v["registry.tls_ca"]),
        tls_cert=opt(v["registry.tls_cert"]),
        tls_key=opt(v["registry.tls_key"]),
        budget=v["registry.budget_seconds"],
        request_timeout=v["registry.request_timeout_seconds"],
        retries=v["registry.retries"],
        backoff_base=v["registry.backoff_base_seconds"],
        backoff_max=v["registry.backoff_max_seconds"],
        cache_size=v["registry.cache_size"],
        cache_ttl=v["registry.cache_ttl_seconds"],
        negative_ttl=v["registry.negative_ttl_seconds"],
        batch_window=v["registry.batch_window_seconds"],
        batch_max=v["registry.batch_max"],
        breaker_failure_threshold=v["registry.breaker_failure_threshold"],
        breaker_reset_timeout=v["registry.breaker_reset_timeout_seconds"],
        mirror=v["registry.mirror"],
        mirror_database=str(data(v["registry.mirror_database"])),
        mirror_interval=v["registry.mirror_interval_seconds"],
        mirror_page_size=v["registry.mirror_page_size"],
        mirror_max_staleness=v["registry.mirror_max_staleness_seconds"],
        max_connections=v["registry.max_connections"],
        extra_headers=tuple(sorted(free["registry.extra_headers"].items())),
    )
    return GatewayConfig(
        source=file,
        state_dir=state,
        peer=peer,
        transport=transport,
        process=ProcessConfig(workers),
        overload=OverloadSettings(
            target_delay=v["diameter.overload_target_delay_seconds"],
            interval=v["diameter.overload_interval_seconds"],
            doic=v["diameter.doic"],
            validity_duration=v["diameter.doic_validity_seconds"],
            doic_peers=tuple(v["diameter.doic_peers"]),
        ),
        metrics=MetricsConfig(host, port),
        n5g_eir=n5g_eir,
        tac=TacConfig(inp(v["tac.file"]) if v["tac.file"] else None, data(v["tac.database"])),
        lists=ListsConfig(
            data(v["lists.database"]),
            tuple(inp(p) for p in v["lists.import_files"]),
            v["lists.poll_interval_seconds"],
            v["lists.shared_snapshot"],
        ),
        policy=policy,
        clone_detection=CloneDetectionConfig(
            v["clone_detection.enabled"],
            v["clone_detection.threshold"],
            v["clone_detection.window_seconds"],
            v["clone_detection.max_imeis"],
        ),
        observations=ObservationsConfig(
            v["observations.enabled"],
            data(v["observations.database"]),
            v["observations.queue_size"],
            v["observations.batch_size"],
            v["observations.flush_interval_seconds"],
            v["observations.writer"],
        ),
        shared=SharedConfig(
            v["shared.redis_url"],
            v["shared.key_prefix"],
            v["shared.budget_seconds"],
            v["shared.timeout_seconds"],
            v["shared.retry_seconds"],
            v["shared.observation_stream"],
            v["shared.redis_cluster"],
        ),
        registry=registry,
        logging=LoggingConfig(
            v["logging.level"].upper(), v["logging.format"], v["logging.mask_imsi"]
        ),
        api=_api(v, inp, state, where),
        events=_events(v, inp, where),
        state=StateConfig(v["state.backend"], v["state.dsn"]),
        values=dict(v),
        env_vars=dict(env_vars),
    )
