"""Build the classifier's registry slot (a ``VerdictSource``) from ``RegistrySettings``.

The backends live in ``registry_client.factory``: ``local`` (embedded SQLite registry, the
default), ``http`` (a remote registry per registry-api.yaml, with cache, batching and breaker)
and ``none`` (no registry: the classifier then produces no registry reasons).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from registry_client.factory import build_source
from registry_client.model import VerdictSource
from registry_client.settings import RegistrySettings


def build(
    settings: RegistrySettings, metrics_registry: CollectorRegistry | None = None
) -> VerdictSource | None:
    """The verdict source for ``settings``, or None when no registry is to be consulted."""
    return build_source(settings, metrics_registry)
