"""The process's open-file limit (RLIMIT_NOFILE), raised at start to what the connection limits
need.

Every connection is a file descriptor. ``diameter.max_connections`` and
``n5g_eir.max_connections`` bound each interface's, but only below RLIMIT_NOFILE: past it,
accept() fails with EMFILE on every listener alike, so one interface filling its own allowance
(an N5g-eir flood of 1,024 connections) would keep MMEs from connecting at all. systemd starts
services with a soft limit of 1,024 and a hard one far higher (524,288), and a soft limit may be
raised to the hard one without privilege; Go's runtime does so at start, nginx has
``worker_rlimit_nofile``. A hard limit still below the need is said once, at start, naming the
keys to lower or the limit to raise.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from gateway.config import GatewayConfig

# Descriptors besides the connections: listeners, stores, logs, Redis, PostgreSQL, the
# observation writer's socket, the metrics server, the API (api.max_connections, 64).
RESERVE = 256
# Where the hard limit is "unlimited": the kernel's own default ceiling (fs.nr_open).
UNLIMITED_CAP = 1 << 20


@dataclass(frozen=True, slots=True)
class Need:
    """Descriptors the configured limits need, and how that sum is made (for the message)."""

    total: int
    parts: tuple[tuple[str, int], ...]


def need(config: GatewayConfig) -> Need | None:
    """What the connection limits need; None when one of them is 0 (no bound)."""
    parts = [("diameter.max_connections", config.transport.max_connections)]
    if config.n5g_eir.listen:
        parts.append(("n5g_eir.max_connections", config.n5g_eir.max_connections))
    if any(limit == 0 for _, limit in parts):
        return None
    parts.append(("registry.max_connections", config.registry.max_connections))
    parts.append(("the rest", RESERVE))
    return Need(sum(limit for _, limit in parts), tuple(parts))


def raise_soft_limit() -> tuple[int, int, int]:
    """Soft limit to the hard one; (soft before, soft after, hard). A refusal (a container's
    seccomp, a hard limit above fs.nr_open) leaves the soft limit as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    after, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, after, hard


def apply(config: GatewayConfig, log: logging.Logger) -> int:
    """Raise the soft limit and say what an operator must know; the soft limit in force."""
    before, after, _ = raise_soft_limit()
    if after != before:
        log.info("open files limit (RLIMIT_NOFILE) raised from %d to %d", before, after)
    needed = need(config)
    if needed is None:
        log.warning(
            "a connection limit is 0 (none): connections of one interface may take all %d "
            "file descriptors, and then every listener refuses connections alike", after,
        )
    elif after != resource.RLIM_INFINITY and needed.total > after:
        parts = " + ".join(f"{name} {limit}" for name, limit in needed.parts)
        log.warning(
            "open files limit %d is below the %d the connection limits need (%s): past it "
            "every listener refuses connections alike; raise the hard limit (systemd "
            "LimitNOFILE=, ulimit -Hn) or lower those limits", after, needed.total, parts,
        )
    return after
