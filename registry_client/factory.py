"""Choose the registry backend from settings: ``local`` (embedded SQLite), ``http``, ``none``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from registry_client.client import HttpRegistryClient
from registry_client.local import LocalRegistry
from registry_client.metrics import registry_metrics
from registry_client.model import VerdictSource
from registry_client.settings import RegistrySettings

BACKENDS = ("local", "http", "none")


def build_source(
    settings: RegistrySettings, metrics_registry: CollectorRegistry | None = None
) -> VerdictSource | None:
    """The configured ``VerdictSource``, or None for ``backend = "none"``.

    ``local`` opens (creating) ``settings.database`` and imports ``settings.seed_files`` when it
    is empty; ``http`` builds an ``HttpRegistryClient`` whose collectors go to
    ``metrics_registry`` (default: prometheus_client.REGISTRY). Both have ``async start()`` and
    ``async close()``; ``start`` is optional (the HTTP client starts on its first check).
    Raises ValueError for an unknown backend and DeclarationFileError for a bad seed file.
    """
    if settings.backend == "none":
        return None
    if settings.backend == "local":
        if metrics_registry is not None:
            # The registry_* families exist whatever the backend (DESIGN.md §6), so dashboards
            # and alerts read 0 requests and a closed circuit rather than "no data".
            registry_metrics(metrics_registry)
        return LocalRegistry.open(
            settings.database, settings.seed_files, memo_size=settings.cache_size
        )
    if settings.backend == "http":
        return HttpRegistryClient(settings, metrics_registry=metrics_registry)
    raise ValueError(
        f"registry backend must be one of {', '.join(BACKENDS)}, got {settings.backend!r}"
    )
