"""The live provisioning API against its own OpenAPI 3.1 document (schemathesis): every
operation, with valid and invalid input, answers what the document says (status, media type,
body schema); errors are problem+json."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from gateway.api.openapi import document
from gateway.config import load_config
from gateway.service import Gateway
from tests.api.conftest import ADMIN, api_env
from tests.e2e.conftest import gateway_env

CONFIG = SchemathesisConfig.from_str(
    f"""
[auth.openapi.bearer]
bearer = "{ADMIN}"
"""
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


class ThreadedGateway:
    """A gateway (S13 and API) on its own loop in a thread: schemathesis calls are synchronous."""

    def __init__(self, state: Path) -> None:
        self.gateway = Gateway(load_config(None, env=gateway_env(state, **api_env())))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(30)
        assert self.gateway.api is not None
        return f"http://127.0.0.1:{self.gateway.api.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ThreadedGateway(tmp_path_factory.mktemp("api-contract")) as url:
        yield url


@schema.parametrize()
# derandomize: the same examples every run (a shared suite must not fail at random); the
# examples still cover every operation with valid and invalid input.
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much],
)
def test_api_follows_its_contract(case: schemathesis.Case, base_url: str) -> None:
    excluded = []
    path = case.operation.path
    if any(p in path for p in ("{imei}", "{tac}", "{entry}", "/v1/lists/entries")):
        # Schema-valid yet rightly refused (400, documented): a 15-digit IMEI whose Luhn digit
        # is wrong (a pattern cannot express Luhn), a range that ends before it starts, a value
        # or IMSI that does not fit the kind, a pagination cursor this API never issued.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if path == "/v1/lists/imports":
        # The body is a file: its rows are judged by the import job (which fails naming the
        # row), not when it is accepted (202), so a "schema-violating" body is not refused.
        excluded.append(schemathesis.checks.negative_data_rejection)
    case.call_and_validate(base_url=base_url, excluded_checks=excluded)
