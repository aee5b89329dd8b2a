"""Settings of the N5g-eir service: one frozen object handed to constructors ([n5g_eir])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# n5g_eir.non_imei_pei: the answer to a PEI with no IMEI (mac-, eui-): a status, or one of these.
EQUIPMENT_UNKNOWN = "equipment_unknown"  # 404 ERROR_EQUIPMENT_UNKNOWN, like 5422 on S13
REJECT = "reject"  # 400 MANDATORY_QUERY_PARAM_INCORRECT


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    scheme: str  # "http": h2c with prior knowledge; "https": TLS with ALPN h2 (TS 29.500 §5.2.2)
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class N5gEirSettings:
    listen: tuple[HttpEndpoint, ...] = (HttpEndpoint("http", "127.0.0.1", 8080),)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify_client: bool = False
    # Source address CIDRs a connection may come from (the AMFs'); empty: any.
    allowed_networks: tuple[str, ...] = ()
    # Open connections per process; one more is told GOAWAY and closed. 0: no limit.
    max_connections: int = 1024
    # RFC 9113 §6.5.2 SETTINGS we announce; a peer exceeding them loses the connection.
    max_concurrent_streams: int = 128
    max_header_list_bytes: int = 16_384
    initial_window_bytes: int = 65_535
    max_uri_bytes: int = 4_096  # a longer :path gets 414
    # Checks waiting for the registry: past the total, 503; past the per-connection share, 429.
    max_in_flight: int = 4_096
    max_in_flight_per_connection: int = 64
    retry_after_seconds: float = 1.0
    non_imei_pei: str = EQUIPMENT_UNKNOWN
    # Grace given to streams in flight after GOAWAY at shutdown.
    shutdown_grace_seconds: float = 5.0
    # A connection without a stream open or a request for this long is closed (GOAWAY); 0: never.
    idle_timeout_seconds: float = 600.0
    # RFC 9113 §6.7 PING after this long without a byte from the client; no ACK within
    # ping_timeout_seconds: the connection is dropped. 0: no liveness PINGs.
    ping_interval_seconds: float = 60.0
    ping_timeout_seconds: float = 20.0
    # OAuth2 access tokens (TS 33.501 §13.4.1): off, as TS 29.511's empty security alternative
    # allows; on, every request needs a bearer JWT signed by one of these public keys.
    oauth2: bool = False
    oauth2_keys: tuple[str, ...] = ()
    oauth2_audience: tuple[str, ...] = ("5G_EIR",)
    oauth2_issuers: tuple[str, ...] = ()  # accepted iss (NRF instance IDs); empty: any
    oauth2_subjects: tuple[str, ...] = ()  # accepted sub (consumer NF instance IDs); empty: any


class OverloadSignal(Protocol):
    """Overload detected elsewhere in the process (the Diameter side's measure of queueing
    delay): while it says so, new checks get 503 NF_CONGESTION instead of being classified."""

    def retry_after(self) -> float | None:
        """Seconds a client should wait before retrying, or None when not overloaded."""
        ...

