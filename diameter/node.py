"""The local Diameter node: identity, applications, and the state shared by its connections.

One ``Node`` per process role (the gateway, a simulator). Its connections (``Peer`` objects) share
the registry of peers by Origin-Host (for the election rule, RFC 6733 §5.6.4), the duplicate cache
(RFC 6733 §5.5.4, so a retransmission on another connection is caught), the identifier
generators (§3) and the total bound on requests in flight.
"""

from __future__ import annotations

import random as _random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from diameter.application import Application, NullObserver, Observer
from diameter.duplicates import DuplicateCache
from diameter.lane import Lanes
from diameter.overload import OverloadControl, OverloadSettings
from diameter.settings import LocalIdentity, PeerSettings

if TYPE_CHECKING:
    from diameter.peer import Peer


class Node:
    def __init__(
        self,
        settings: PeerSettings | None = None,
        applications: Iterable[Application] = (),
        observer: Observer | None = None,
        *,
        max_in_flight_total: int = 16_384,
        origin_state_id: int | None = None,
        rng: _random.Random | None = None,
        overload: OverloadSettings | None = None,
    ) -> None:
        settings = settings or PeerSettings()
        self.settings = settings
        self.identity = settings.identity
        self._served_realms: tuple[PeerSettings, LocalIdentity, frozenset[str]] | None = None
        self.rng = rng or _random.Random()
        self.observer: Observer = observer or NullObserver()
        self.applications: dict[int, Application] = {}
        for app in applications:
            self.add_application(app)
        # RFC 6733 §8.16: Origin-State-Id grows at each restart; the transport passes the start
        # time when the identity does not fix one.
        if self.identity.origin_state_id is not None:
            origin_state_id = self.identity.origin_state_id
        self.origin_state_id: int = (
            origin_state_id if origin_state_id is not None else self.rng.getrandbits(32)
        )
        self.duplicates = DuplicateCache(settings.duplicate_window, settings.duplicate_cache_size)
        # Shapes of application requests found well formed, taken by their lanes (diameter.lane).
        self.lanes = Lanes()
        self.max_in_flight_total = max_in_flight_total
        self.in_flight_total = 0
        # Queueing delay -> 3004 and DOIC reports (the adapter feeds it measurements).
        self.overload = OverloadControl(overload, self.identity, self.origin_state_id)
        # Connections closed for sending too many malformed requests (PeerSettings.malformed_*).
        self.malformed_disconnects = 0
        # Connections closed at accept, past TransportSettings.max_connections.
        self.connections_refused = 0
        # Octets of received messages handled over all connections, and the time the adapter
        # spent handling them: the service rate that overload control divides backlogs by.
        self.processed_bytes = 0
        self.busy_seconds = 0.0
        # Origin-Host (lower case) -> the connection that holds that peer's state (§5.6.4).
        self.peers: dict[str, Peer] = {}
        self._hop_by_hop = self.rng.getrandbits(32)
        # RFC 6733 §3: End-to-End high 12 bits from the start state, low 20 bits random.
        self._end_to_end = ((self.origin_state_id & 0xFFF) << 20) | self.rng.getrandbits(20)

    def add_application(self, application: Application) -> None:
        self.applications[application.application_id] = application

    @property
    def served_realms(self) -> frozenset[str]:
        # Read for every request: computed once per settings/identity object.
        settings, identity = self.settings, self.identity
        cached = self._served_realms
        if cached is not None and cached[0] is settings and cached[1] is identity:
            return cached[2]
        realms = settings.served_realms or (identity.origin_realm,)
        served = frozenset(r.lower() for r in realms)
        self._served_realms = (settings, identity, served)
        return served

    def next_hop_by_hop(self) -> int:
        self._hop_by_hop = (self._hop_by_hop + 1) & 0xFFFFFFFF
        return self._hop_by_hop

    def next_end_to_end(self) -> int:
        self._end_to_end = (self._end_to_end + 1) & 0xFFFFFFFF
        return self._end_to_end

    def open_peers(self) -> list[Peer]:
        """Connections in R-Open or I-Open."""
        return [p for p in self.peers.values() if p.is_open]
