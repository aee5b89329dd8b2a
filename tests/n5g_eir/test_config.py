"""[n5g_eir] configuration: defaults, listeners, validation errors that name the key."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config, parse_http_listen
from gateway.n5g_eir.settings import HttpEndpoint


def test_embedded_default_serves_h2c_on_8080() -> None:
    config = load_config(None)
    assert config.n5g_eir.listen == (HttpEndpoint("http", "127.0.0.1", 8080),)
    assert config.n5g_eir.non_imei_pei == "equipment_unknown"
    # Admission: any source address (as before these keys), at most 1,024 connections.
    assert config.n5g_eir.allowed_networks == () and config.n5g_eir.max_connections == 1024


def test_listeners_and_off() -> None:
    config = load_config(None, env={"EIR_N5G_EIR_LISTEN": "http://[::1]:0, http://127.0.0.1"})
    assert config.n5g_eir.listen == (HttpEndpoint("http", "::1", 0),
                                     HttpEndpoint("http", "127.0.0.1", 80))
    assert load_config(None, env={"EIR_N5G_EIR_LISTEN": ""}).n5g_eir.listen == ()
    assert parse_http_listen("https://127.0.0.1").port == 443


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EIR_N5G_EIR_LISTEN": "tcp://127.0.0.1:8080"}, "scheme must be http, https"),
        ({"EIR_N5G_EIR_LISTEN": "http://eir.example:8080"}, "bad address"),
        ({"EIR_N5G_EIR_LISTEN": "http://127.0.0.1:8080,http://127.0.0.1:8080"}, "listed twice"),
        ({"EIR_N5G_EIR_LISTEN": "https://127.0.0.1:8443"}, "needs tls_cert and tls_key"),
        ({"EIR_N5G_EIR_NON_IMEI_PEI": "maybe"}, "is not one of WHITELISTED"),
        ({"EIR_N5G_EIR_INITIAL_WINDOW_BYTES": "2147483648"}, "between 1 and 2147483647"),
        ({"EIR_N5G_EIR_MAX_CONCURRENT_STREAMS": "0"}, "between 1 and 4294967295"),
        # RFC 9113 §6.5.1: 32-bit SETTINGS values (a larger one failed every connection).
        ({"EIR_N5G_EIR_MAX_CONCURRENT_STREAMS": "4294967296"}, "between 1 and 4294967295"),
        ({"EIR_N5G_EIR_MAX_HEADER_LIST_BYTES": "4294967296"}, "between 1 and 4294967295"),
        # round(inf) raised OverflowError at start-up, out of the handler's constructor.
        ({"EIR_N5G_EIR_RETRY_AFTER_SECONDS": "inf"}, "finite number"),
        ({"EIR_N5G_EIR_TLS_CERT": "missing.pem"}, "does not exist"),
        ({"EIR_N5G_EIR_ALLOWED_NETWORKS": "10.0.0.0/8,amf.example"}, "not a CIDR network"),
        ({"EIR_N5G_EIR_MAX_CONNECTIONS": "-1"}, "must not be negative"),
    ],
)
def test_errors_name_the_key(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert "n5g_eir." in str(info.value) and expected in str(info.value)
