"""The live N5g-eir server against its own OpenAPI document (schemathesis), over HTTP/2.

The document (gateway/n5g_eir/openapi.yaml, served at /n5g-eir-eic/v1/openapi.yaml) follows
TS 29.511's schemas and names. schemathesis generates requests from it, valid and invalid; an
HTTP/2 client (httpx, h2c prior knowledge) sends them to a gateway on loopback, and every
response is checked against the document (status documented, body schema, content type) and
against schemathesis' checks (valid data accepted, invalid data rejected).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.config import load_config
from gateway.n5g_eir.request import OPENAPI_PATH
from gateway.service import Gateway
from tests.e2e.conftest import gateway_env
from tests.threaded import ThreadedLoop

DOCUMENT = Path(__file__).resolve().parents[2] / "gateway" / "n5g_eir" / "openapi.yaml"
schema = schemathesis.openapi.from_path(str(DOCUMENT))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("n5g-contract")
    gateway = Gateway(load_config(None, env=gateway_env(state)))
    with ThreadedLoop(gateway.start, gateway.stop):
        _, host, port = gateway.n5g_eir_sockets[0]
        yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(http1=False, http2=True, timeout=10) as amf:
        yield amf


def test_the_document_is_served(base_url: str, client: httpx.Client) -> None:
    response = client.get(base_url + OPENAPI_PATH)
    assert response.status_code == 200 and response.http_version == "HTTP/2"
    assert response.content == DOCUMENT.read_bytes()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_live_server_follows_its_openapi(
    case: schemathesis.Case, base_url: str, client: httpx.Client
) -> None:
    request = case.as_transport_kwargs(base_url=base_url + "/n5g-eir-eic/v1")
    response = client.request(
        request["method"], request["url"], params=request.get("params"),
        headers=request.get("headers"),
    )
    assert response.http_version == "HTTP/2"
    case.validate_response(response)
