"""What a simulator run is asked to do: the target, the interface, the load and its limits."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

S13 = "s13"
N5G_EIR = "n5g-eir"
INTERFACES = (S13, N5G_EIR)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 3868
    # s13: simulated MMEs (Diameter); n5g-eir: simulated AMFs (HTTP/2, TS 29.511).
    interface: str = S13
    # s13: tcp | sctp | tls; n5g-eir: tcp (h2c, prior knowledge) | tls (ALPN h2)
    transport: str = "tcp"
    connections: int = 1
    origin_host: str = "mme{n}.sim.local"  # {n}: the connection number, from 1
    origin_realm: str = "sim.local"
    destination_realm: str = "localdomain"
    destination_host: str | None = None
    mode: str = "closed"  # closed | open
    window: int = 16  # closed loop: outstanding requests per connection
    rate: float = 1000.0  # open loop: requests per second over all connections
    spin: float = 0.002  # open loop: busy-wait this close to a send; 0 = sleep on the timer
    count: int | None = None
    duration: float | None = None
    max_duration: float = 300.0  # hard stop, whatever count and duration say
    timeout: float = 5.0  # per request
    connect_timeout: float = 10.0
    watchdog: float = 30.0  # Tw of our side (RFC 3539 §3.4.1)
    max_outstanding: int = 65_536  # open loop: beyond it, requests are dropped (and counted)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    tls_verify: bool = True
    verify: bool = True  # compare outcomes with expected ones when checks carry them
    progress: bool = False  # once a second on stderr
    capture: bool = False  # record bytes for a pcap
    # RFC 7683 reacting node: send OC-Supported-Features, honour the EIR's OC-OLR (loss).
    doic: bool = False

    def origin_host_of(self, index: int) -> str:
        return self.origin_host.format(n=index + 1)

    def validate(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"interface {self.interface!r} is not {' or '.join(INTERFACES)}")
        if self.interface == N5G_EIR:
            if self.transport not in ("tcp", "tls"):
                raise ValueError("N5g-eir runs over tcp (h2c) or tls (h2), not "
                                 f"{self.transport}")
            if self.doic or self.capture:
                raise ValueError("DOIC and pcap capture are S13's (Diameter) only")
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode {self.mode!r} is not closed or open")
        if self.transport not in ("tcp", "sctp", "tls"):
            raise ValueError(f"transport {self.transport!r} is not tcp, sctp or tls")
        if self.connections < 1 or self.window < 1:
            raise ValueError("connections and window must be at least 1")
        if self.mode == "open" and not self.rate > 0:
            raise ValueError("open loop needs a rate above 0")
        if not 0 <= self.spin <= 1:
            raise ValueError("spin must be 0 to 1 second")
        if self.count is None and self.duration is None:
            raise ValueError("give a count or a duration (or both)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration must be above 0")
        if not self.timeout > 0 or not self.max_duration > 0:
            raise ValueError("timeout and max_duration must be above 0")

    def method(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "connections": self.connections,
            "window": self.window if self.mode == "closed" else None,
            "rate": self.rate if self.mode == "open" else None,
            "spin": self.spin if self.mode == "open" else None,
            "count": self.count,
            "duration": self.duration,
            "timeout": self.timeout,
            "interface": self.interface,
            "transport": self.transport_name,
            "target": self.target,
            "doic": self.doic,
            "python": sys.version.split()[0],
        }

    @property
    def transport_name(self) -> str:
        if self.interface == N5G_EIR:
            return "h2" if self.transport == "tls" else "h2c"
        return self.transport

    @property
    def target(self) -> str:
        if self.interface == N5G_EIR:
            return f"{'https' if self.transport == 'tls' else 'http'}://{self.host}:{self.port}"
        return f"{self.host}:{self.port}"
