"""Capabilities exchange content (RFC 6733 §5.3): what we advertise, what we have in common with
a peer, and whether local policy admits the peer (§5.3: unknown peers may be rejected with 3010).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from diameter.application import Application, PeerInfo, vendor_specific_application_id
from diameter.codec import Avp, Message
from diameter.dictionary.base_rfc6733 import RELAY_APPLICATION_ID
from diameter.errors import DecodeError
from diameter.networks import address_refused, parse_networks
from diameter.settings import LocalIdentity, PeerSettings

AUTH_APPLICATION_ID = 258
ACCT_APPLICATION_ID = 259
VENDOR_SPECIFIC_APPLICATION_ID = 260
HOST_IP_ADDRESS = 257
SUPPORTED_VENDOR_ID = 265


def capabilities_avps(
    identity: LocalIdentity,
    applications: Mapping[int, Application],
    host_ip_addresses: Iterable[str],
    origin_state_id: int | None,
) -> list[Avp]:
    """The CER/CEA capability AVPs (RFC 6733 §5.3.1, §5.3.2), without Origin-Host/-Realm.

    One Host-IP-Address per local address; applications with a vendor go into a
    Vendor-Specific-Application-Id and their vendor into Supported-Vendor-Id (§6.11, §5.3.6).
    """
    avps = [Avp.new("Host-IP-Address", address) for address in host_ip_addresses]
    avps.append(Avp.new("Vendor-Id", identity.vendor_id))
    avps.append(Avp.new("Product-Name", identity.product_name))
    if origin_state_id is not None:
        avps.append(Avp.new("Origin-State-Id", origin_state_id))
    vendors = sorted({app.vendor_id for app in applications.values() if app.vendor_id})
    avps.extend(Avp.new("Supported-Vendor-Id", vendor) for vendor in vendors)
    for app in applications.values():
        if not app.vendor_id:
            avps.append(Avp.new("Auth-Application-Id", app.application_id))
    for app in applications.values():
        if app.vendor_id:
            avps.append(vendor_specific_application_id(app.vendor_id, app.application_id))
    if identity.firmware_revision is not None:
        avps.append(Avp.new("Firmware-Revision", identity.firmware_revision))
    return avps


def advertised_applications(message: Message) -> frozenset[int]:
    """Every Auth-/Acct-Application-Id of a CER/CEA, top level or inside a
    Vendor-Specific-Application-Id (whose Vendor-Id plays no part, RFC 6733 §5.3)."""
    ids: set[int] = set()
    for avp in message.avps:
        try:
            if avp.code in (AUTH_APPLICATION_ID, ACCT_APPLICATION_ID) and not avp.vendor:
                ids.add(avp.value)
            elif avp.code == VENDOR_SPECIFIC_APPLICATION_ID and not avp.vendor:
                for child in avp.children:
                    if child.code in (AUTH_APPLICATION_ID, ACCT_APPLICATION_ID) and not child.vendor:
                        ids.add(child.value)
        except DecodeError:
            continue  # validation reports malformed AVPs; here they advertise nothing
    return frozenset(ids)


NO_INBAND_SECURITY = 0  # RFC 6733 §6.10 Inband-Security-Id
_INBAND_SECURITY_ID = 299


def inband_security_acceptable(message: Message) -> bool:
    """RFC 6733 §6.10: a CER listing Inband-Security-Id values none of which is
    NO_INBAND_SECURITY asks for the RFC 3588 in-band TLS upgrade, which we do not offer
    (TLS is served from the first byte on its own port, §2.1): DIAMETER_NO_COMMON_SECURITY."""
    offered = [a for a in message.avps if a.code == _INBAND_SECURITY_ID and not a.vendor]
    if not offered:
        return True
    for avp in offered:
        try:
            if avp.value == NO_INBAND_SECURITY:
                return True
        except DecodeError:
            continue  # the CER's CCF check reports a malformed value first
    return False


def common_applications(local: Iterable[int], remote: frozenset[int]) -> frozenset[int]:
    """RFC 6733 §5.3: the intersection; a relay (0xffffffff) on either side supports them all."""
    mine = frozenset(local)
    if RELAY_APPLICATION_ID in remote:
        return mine | {RELAY_APPLICATION_ID}
    if RELAY_APPLICATION_ID in mine:
        return remote
    return mine & remote


def peer_info(
    message: Message,
    applications: frozenset[int],
    *,
    remote_address: tuple[str, int] | None,
    transport: str,
    role: str,
) -> PeerInfo:
    """What a (validated) CER or CEA says about its sender."""
    addresses = []
    for avp in message.find_all(HOST_IP_ADDRESS):
        try:
            addresses.append(str(avp.value))
        except DecodeError:
            continue
    vendors: set[int] = set()
    for avp in message.find_all(SUPPORTED_VENDOR_ID):
        try:
            vendors.add(avp.value)
        except DecodeError:
            continue
    return PeerInfo(
        origin_host=_get(message, "Origin-Host", ""),
        origin_realm=_get(message, "Origin-Realm", ""),
        applications=applications,
        host_ip_addresses=tuple(addresses),
        vendor_id=_get(message, "Vendor-Id", 0),
        product_name=_get(message, "Product-Name", ""),
        firmware_revision=_get(message, "Firmware-Revision", None),
        origin_state_id=_get(message, "Origin-State-Id", None),
        supported_vendor_ids=frozenset(vendors),
        remote_address=remote_address,
        transport=transport,
        role=role,
    )


def _get(message: Message, name: str, default: Any) -> Any:
    try:
        return message.get(name, default)
    except DecodeError:
        return default


def admitted(
    settings: PeerSettings, origin_host: str, origin_realm: str, remote_ip: str | None
) -> str | None:
    """Local admission policy (RFC 6733 §5.3). None when admitted, else why not."""
    if settings.allowed_hosts and not name_matches(origin_host, settings.allowed_hosts):
        return f"Origin-Host {origin_host} not allowed"
    if settings.allowed_realms and not name_matches(origin_realm, settings.allowed_realms):
        return f"Origin-Realm {origin_realm} not allowed"
    if settings.allowed_networks:
        return address_refused(remote_ip, parse_networks(settings.allowed_networks))
    return None


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the fnmatch ``patterns``, case-insensitively."""
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns)
