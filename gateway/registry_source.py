"""Build the classifier's registry slot (a ``VerdictSource``) from ``RegistrySettings``.

Handed over to the registry-client engineer: this currently returns ``None`` (no registry; the
classifier then produces no registry reasons) until the registry client wires its backends
(``local``, ``http``, mirror) in here. Callers must already handle both outcomes.
"""

from __future__ import annotations

from registry_client.model import VerdictSource
from registry_client.settings import RegistrySettings


def build(settings: RegistrySettings) -> VerdictSource | None:
    """The verdict source for ``settings``, or None when no registry is to be consulted."""
    from registry_client.factory import build_source  # backends: local (SQLite), http, none

    return build_source(settings)
