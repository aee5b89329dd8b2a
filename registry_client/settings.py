"""Registry client settings: one frozen object handed to constructors (never read from globals)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    # "local" (embedded SQLite registry), "http" (remote registry per registry-api.yaml), "none".
    backend: str = "local"
    # local backend: SQLite file, and declaration/report files imported when it is empty.
    database: str = "var/registry.sqlite"
    seed_files: tuple[str, ...] = ()
    # http backend
    url: str = "http://127.0.0.1:8700"
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = 64  # connection pool size (keep-alive)
    # time limits, seconds
    budget: float = 0.05  # the most one S13 check waits for a verdict
    request_timeout: float = 2.0
    retries: int = 2
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    # cache
    cache_size: int = 100_000
    cache_ttl: float = 3600.0  # used when the server sends no max-age
    negative_ttl: float = 300.0  # for "unknown" verdicts
    # micro-batching of misses into POST /v1/imeis:check
    batch_window: float = 0.002
    batch_max: int = 1000
    # circuit breaker
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 10.0
    # mirror /v1/changes into a local copy
    mirror: bool = False
    mirror_database: str = "var/registry-mirror.sqlite"
    mirror_interval: float = 60.0
    mirror_page_size: int = 1000  # GET /v1/changes limit (1..10000)
    # Past this long without a successful sync the copy is not trusted (checks go online); 0: no limit.
    mirror_max_staleness: float = 86_400.0
    extra_headers: tuple[tuple[str, str], ...] = field(default=())
