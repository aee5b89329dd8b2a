"""The global IMEI registry (draft ITU-T Q.5057) as seen from an operator; contract registry-api.yaml.

- ``model``: verdicts, reports, ``VerdictSource`` (the classifier's slot), ``RegistryUnavailable``
- ``settings``: ``RegistrySettings``
- ``factory.build_source(settings)``: the configured backend (``local`` / ``http`` / ``none``)
- ``local.LocalRegistry``: embedded SQLite registry (default backend; import of JSON/CSV files)
- ``client.HttpRegistryClient``: remote registry with cache, single-flight, batching, retries,
  circuit breaker and mirror mode (``mirror``); collectors in ``metrics``
- ``server.RegistryServer``: reference registry serving a ``LocalRegistry`` over HTTP

Nothing here imports ``gateway``.
"""

from eir_compiled.finder import install

install()  # the compiled build of the hot modules, where one matches the sources
