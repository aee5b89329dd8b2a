"""Settings of the local Diameter node: one frozen object handed to constructors."""

from __future__ import annotations

from dataclasses import dataclass

# AVPs in one list (a message, or one Grouped AVP) past which a request is refused with 5009
# (validate.check_request): every message's walk stays bounded whatever its shape. Real
# requests carry a dozen or two per level; a CER with many Host-IP-Address,
# Supported-Vendor-Id and Vendor-Specific-Application-Id AVPs stays well under.
MAX_AVPS = 256


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """What this node says about itself in CER/CEA and in every answer (RFC 6733 §5.3)."""

    origin_host: str = "eir.localdomain"
    origin_realm: str = "localdomain"
    host_ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    vendor_id: int = 0
    product_name: str = "eir-gateway"
    firmware_revision: int | None = 1
    origin_state_id: int | None = None


@dataclass(frozen=True, slots=True)
class PeerSettings:
    identity: LocalIdentity = LocalIdentity()
    # RFC 3539 §3.4.1: Tw init 30 s, never below 6 s, jitter of +-2 s added each time.
    watchdog_interval: float = 30.0
    watchdog_jitter: float = 2.0
    # RFC 6733 §5.6.1: close an incoming connection that sends no CER in time.
    cer_timeout: float = 10.0
    # Wait this long for DPA after our DPR before closing anyway.
    dpa_timeout: float = 5.0
    # After answering a DPR, wait this long for the peer to close (RFC 6733 §5.4) before closing.
    disconnect_linger: float = 1.0
    # Wait this long for CEA after our CER (initiator).
    cea_timeout: float = 10.0
    # Duplicate detection (RFC 6733 §5.5.4): End-to-End + Origin-Host seen within the window.
    duplicate_window: float = 60.0
    duplicate_cache_size: int = 10_000
    # Requests being processed at once for one peer; past it, 3004 DIAMETER_TOO_BUSY.
    max_in_flight_per_peer: int = 1024
    # A peer whose requests are refused as malformed more than malformed_limit times within
    # malformed_window seconds gets its error answers, then a DPR (DO_NOT_WANT_TO_TALK_TO_YOU)
    # and the connection closes; it may connect again. 0 turns the limit off.
    malformed_limit: int = 100
    malformed_window: float = 10.0
    # Longest message accepted (RFC 6733 §3 allows 2**24 - 1): each costs work in proportion to
    # its AVPs; a longer one is answered 5015 and the connection closed (§2.1: no resync).
    max_message_size: int = 1 << 20
    # Most AVPs in a request, and in each of its Grouped AVPs; one more: 5009 (see MAX_AVPS).
    max_avps: int = MAX_AVPS
    # Destination-Realm values we serve; empty means our own origin_realm only.
    served_realms: tuple[str, ...] = ()
    # Peer admission (RFC 6733 §5.3: unknown peer -> 3010). Empty host/realm tuples admit any;
    # patterns are fnmatch-style, case-insensitive. Networks are CIDRs of allowed source addresses.
    allowed_hosts: tuple[str, ...] = ()
    allowed_realms: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # M bit set on a dictionary AVP whose rule says MUST NOT (RFC 6733 §4.5): True refuses the
    # message with 5016 DIAMETER_INVALID_AVP_BIT_COMBO (§7.1.5); False accepts it, reported to
    # the observer and logged once per connection (real MMEs set M on Product-Name).
    strict_avp_flags: bool = False
    # TLS with a verified client certificate: a CER whose Origin-Host is not a DNS name of the
    # certificate (subjectAltName, or CN without one) gets 3010 DIAMETER_UNKNOWN_PEER (GSMA FS.19).
    tls_verify_origin_host: bool = True


@dataclass(frozen=True, slots=True)
class ListenEndpoint:
    transport: str  # "tcp" | "sctp" | "tls"
    host: str
    port: int
    # SCTP multi-homing (RFC 6733 §2.1.1): further local addresses bound with the first.
    extra_addresses: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.host, *self.extra_addresses)


@dataclass(frozen=True, slots=True)
class SctpSettings:
    """SCTP association parameters (RFC 4960 §15 defaults), applied to every SCTP socket."""

    streams_out: int = 10  # sinit_num_ostreams (we send on stream 0; peers may use more)
    streams_in: int = 65535  # sinit_max_instreams: the streams a peer may open towards us
    rto_initial: float = 3.0  # RTO.Initial, seconds
    rto_min: float = 1.0  # RTO.Min
    rto_max: float = 60.0  # RTO.Max
    heartbeat_interval: float = 30.0  # HB.interval; 0 turns heartbeats off
    path_max_retransmissions: int = 5  # Path.Max.Retrans: then the path is inactive
    nodelay: bool = True  # SCTP_NODELAY: no bundling delay (the Nagle-like algorithm)


@dataclass(frozen=True, slots=True)
class TransportSettings:
    listen: tuple[ListenEndpoint, ...] = (ListenEndpoint("tcp", "127.0.0.1", 3868),)
    # TLS (RFC 6733 port 5868)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify_client: bool = False
    # Requests in flight over all peers; past it, 3004.
    max_in_flight_total: int = 16_384
    # Open transport connections, CER or not (per process); one more is closed at accept,
    # nothing read (a flood of connects that never send CER would hold a socket each until
    # cer_timeout). 0: no limit.
    max_connections: int = 1024
    # Stop reading from a peer while its unsent output exceeds this many bytes.
    write_high_water: int = 1 << 20
    write_low_water: int = 1 << 18
    # Messages of one connection handled per event loop callback before the others are served
    # (fair reading: a peer pipelining thousands of small messages cannot hold the loop).
    read_budget: int = 64
    sctp: SctpSettings = SctpSettings()
