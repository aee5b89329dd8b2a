"""Peer identity over TLS (GSMA FS.19-style hardening of RFC 6733 §13 mutual authentication).

A TLS listener that verified a client certificate knows which host names the certificate vouches
for; a CER whose Origin-Host is not one of them is refused with 3010 DIAMETER_UNKNOWN_PEER (the
peer's capabilities exchange claims an identity its certificate does not prove). The names are
the certificate's subjectAltName dNSName entries, or its subject commonName when it has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def certificate_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The DNS names of a verified certificate, as ``ssl.SSLSocket.getpeercert()`` decodes it;
    None when there is no (verified) certificate."""
    if not peercert:
        return None
    dns = tuple(value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS")
    if dns:
        return dns
    common_names: list[str] = []
    for rdn in peercert.get("subject", ()):
        common_names.extend(value for key, value in rdn if key == "commonName")
    return tuple(common_names)


def origin_host_matches(origin_host: str, names: Iterable[str]) -> bool:
    """Whether ``origin_host`` is one of ``names``: compared case-insensitively (DNS names);
    a ``*`` standing for the whole leftmost label matches exactly one label (RFC 9525 §6.3)."""
    host = origin_host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "*" not in name[2:]:
            label, _, rest = host.partition(".")
            if label and rest and rest == name[2:] and "." in rest:
                return True
    return False
