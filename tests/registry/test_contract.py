"""The reference server against registry-api.yaml, schema-driven (schemathesis).

The contract lives beside the repository (``../shared/registry-api.yaml``; the development
machines also have ``/work/shared``). Without it this module is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_client.local import LocalRegistry
from registry_client.server import RegistryServer
from tests.registry.conftest import REPO, SAMPLE, TOKEN
from tests.threaded import ThreadedLoop

CANDIDATES = [
    Path(os.environ.get("EIR_SHARED_DIR", REPO.parent / "shared")) / "registry-api.yaml",
    Path("/work/shared/registry-api.yaml"),
]
SCHEMA_PATH = next((p for p in CANDIDATES if p.is_file()), None)
if SCHEMA_PATH is None:
    pytest.skip(
        f"registry-api.yaml not found (looked in {', '.join(map(str, CANDIDATES))})",
        allow_module_level=True,
    )

import schemathesis  # noqa: E402  (only once the contract is known to exist)
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

# registry-api.yaml documents 413 for more than maxItems IMEIs: a correct rejection of that
# negative case, which schemathesis' default list of rejection statuses lacks.
CONFIG = SchemathesisConfig.from_str(
    f"""
[auth.openapi.bearer]
bearer = "{TOKEN}"

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415", "422", "429", "5xx"]
"""
)
schema = schemathesis.openapi.from_path(str(SCHEMA_PATH), config=CONFIG)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registry = LocalRegistry.open(tmp_path_factory.mktemp("contract") / "r.sqlite", [SAMPLE])
    server = RegistryServer(registry, tokens=[TOKEN])
    # The reference server on its own loop in a thread (schemathesis calls are synchronous).
    with ThreadedLoop(server.start, server.stop, timeout=5):
        yield server.url
    registry.close_sync()


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_reference_server_follows_the_contract(case: schemathesis.Case, base_url: str) -> None:
    excluded = []
    if case.operation.path.startswith(("/v1/imeis", "/v1/changes")):
        # Schema-valid yet rightly answered 400 (documented): a 15-digit IMEI with a wrong Luhn
        # digit (the pattern ^[0-9]{14,16}$ cannot express info.description's rule), and a
        # ``since`` that is not a cursor this server issued (cursors are opaque strings).
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(base_url=base_url, excluded_checks=excluded)
