"""OAuth2 on N5g-eir (TS 33.501 §13.4.1, RFC 6750, RFC 7519): tokens made here with
``cryptography`` (RS256 and ES256), checked by the verifier and by a live gateway."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("cryptography", reason="OAuth2 needs the Python package cryptography")

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.config import ConfigError, load_config
from gateway.n5g_eir.oauth2 import AccessTokenVerifier
from gateway.n5g_eir.request import EQUIPMENT_STATUS_PATH
from tests.e2e.conftest import StartGateway

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(key: Any = RSA_KEY, **overrides: Any) -> str:
    """An NRF-style access token (TS 29.510 AccessTokenClaims)."""
    claims: dict[str, Any] = {"iss": "nrf-instance", "sub": "amf-instance", "aud": "5G_EIR",
                              "scope": "n5g-eir-eic", "exp": NOW + 3600}
    claims.update(overrides)
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    signed = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}." \
             f"{b64(json.dumps({k: v for k, v in claims.items() if v is not None}).encode())}"
    if alg == "RS256":
        signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signed}.{b64(signature)}"


def verifier(now: float = NOW) -> AccessTokenVerifier:
    return AccessTokenVerifier([RSA_KEY.public_key(), EC_KEY.public_key()],
                               ["5G_EIR", "5d4b1c0e-eir"], clock=lambda: now)


def bearer(text: str) -> bytes:
    return f"Bearer {text}".encode()


def test_valid_tokens_pass() -> None:
    v = verifier()
    assert v.check(bearer(token())) is None
    assert v.check(bearer(token(EC_KEY, aud=["x", "5d4b1c0e-eir"]))) is None
    assert v.check(bearer(token(scope="nnrf-disc n5g-eir-eic"))) is None


@pytest.mark.parametrize(
    ("authorization", "status", "error"),
    [
        (None, 401, None),
        (b"Basic dXNlcjpwYXNz", 401, None),
        (bearer("not-a-jwt"), 401, "invalid_token"),
        (bearer(token(OTHER_KEY)), 401, "invalid_token"),  # signed by a key we do not know
        (bearer(token(exp=NOW - 60)), 401, "invalid_token"),
        (bearer(token(exp=None)), 401, "invalid_token"),
        (bearer(token(nbf=NOW + 600)), 401, "invalid_token"),
        (bearer(token(aud="UDM")), 401, "invalid_token"),
        (bearer(token()[:-4] + "AAAA"), 401, "invalid_token"),  # signature altered
        (bearer(token(scope="nudm-sdm")), 403, "insufficient_scope"),
    ],
)
def test_rejected(authorization: bytes | None, status: int, error: str | None) -> None:
    response = verifier().check(authorization)
    assert response is not None and response.status == status
    challenge = dict(response.headers)[b"www-authenticate"].decode()
    assert challenge.startswith("Bearer")
    assert (error is None and "error=" not in challenge) or f'error="{error}"' in challenge
    assert json.loads(response.body)["status"] == status


def test_issuer_and_subject_as_far_as_configured() -> None:
    v = AccessTokenVerifier([RSA_KEY.public_key()], ["5G_EIR"], clock=lambda: NOW,
                            issuers=["nrf-instance"], subjects=["amf-instance", "amf-2"])
    assert v.check(bearer(token())) is None
    assert v.check(bearer(token(sub="amf-2"))) is None
    for bad_issuer in ("rogue-nrf", None):
        response = v.check(bearer(token(iss=bad_issuer)))
        assert response is not None and response.status == 401
        assert b"(iss)" in dict(response.headers)[b"www-authenticate"]
    for bad_subject in ("smf-instance", None):
        response = v.check(bearer(token(sub=bad_subject)))
        assert response is not None and response.status == 403
        assert b'error="insufficient_scope"' in dict(response.headers)[b"www-authenticate"]
    # Not configured: any iss and sub (TS 33.501 requires neither check).
    assert verifier().check(bearer(token(iss="rogue-nrf", sub=None))) is None


def test_hostile_tokens_are_invalid_not_exceptions() -> None:
    """Whatever a client puts in the token, the answer is a 401 or 403, never an exception
    out of the verifier (which dropped the connection): JSON nested past the reader's
    recursion limit before any signature check, and claims of the wrong JSON type in a token
    whose signature verifies."""
    deep = b64(b"[" * 5000)
    for text in (f"{deep}.{deep}.", f"{b64(b'{}')}.{deep}.AAAA"):
        response = verifier().check(bearer(text))
        assert response is not None and response.status == 401, text[:40]
    v = AccessTokenVerifier([RSA_KEY.public_key()], ["5G_EIR"], clock=lambda: NOW,
                            issuers=["nrf-instance"], subjects=["amf-instance"])
    for claims, status in [({"aud": [{"x": 1}, ["5G_EIR"]]}, 401), ({"aud": 5}, 401),
                           ({"iss": ["nrf-instance"]}, 401), ({"iss": {"a": 1}}, 401),
                           ({"sub": ["amf-instance"]}, 403), ({"sub": {"a": 1}}, 403)]:
        response = v.check(bearer(token(**claims)))
        assert response is not None and response.status == status, claims
    assert v.check(bearer(token(aud=[{"x": 1}, "5G_EIR"]))) is None


def signed_with_header(header: dict[str, Any]) -> str:
    claims = {"aud": "5G_EIR", "scope": "n5g-eir-eic", "exp": NOW + 60}
    signed = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = RSA_KEY.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{b64(signature)}"


def test_critical_extensions_and_a_malformed_nbf_are_invalid() -> None:
    """RFC 7515 §4.1.11: a JWS naming in crit an extension the recipient does not understand
    is invalid (this verifier understands none); RFC 7519 §4.1.5: nbf is a NumericDate. Both
    tokens were accepted, their signatures good."""
    assert verifier().check(bearer(signed_with_header({"alg": "RS256"}))) is None
    for text in (signed_with_header({"alg": "RS256", "crit": ["exp"], "exp": 1}),
                 token(nbf="tomorrow"), token(nbf=True)):
        response = verifier().check(bearer(text))
        assert response is not None and response.status == 401, text
        assert b'error="invalid_token"' in dict(response.headers)[b"www-authenticate"]
    assert verifier().check(bearer(token(nbf=NOW - 10))) is None


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none"}).encode())
    claims = b64(json.dumps({"aud": "5G_EIR", "scope": "n5g-eir-eic", "exp": NOW + 60}).encode())
    assert verifier().check(bearer(f"{header}.{claims}.")) is not None


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    now = [NOW]
    v = AccessTokenVerifier([RSA_KEY.public_key()], ["5G_EIR"], clock=lambda: now[0])
    text = token(exp=NOW + 100)
    assert v.check(bearer(text)) is None
    assert v.check(bearer(text)) is None
    now[0] = NOW + 200  # past exp + leeway
    assert v.check(bearer(text)) is not None


def write_key(tmp_path: Path) -> Path:
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "nrf.pem"
    path.write_bytes(pem)
    return path


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"n5g_eir\.oauth2_keys.*at least one"):
        load_config(None, env={"EIR_N5G_EIR_OAUTH2": "true"})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_config(None, env={"EIR_N5G_EIR_OAUTH2": "true", "EIR_N5G_EIR_OAUTH2_KEYS": str(bad)})


async def test_live_gateway_with_oauth2_on_and_off(start_gateway: StartGateway,
                                                  tmp_path: Path) -> None:
    key = write_key(tmp_path)
    on = await start_gateway(EIR_N5G_EIR_OAUTH2="true", EIR_N5G_EIR_OAUTH2_KEYS=str(key))
    off = await start_gateway()
    params = {"pei": "imei-356938035643809"}
    valid = token(exp=time.time() + 600)
    for gateway, expected in ((on, (401, 200)), (off, (200, 200))):
        _, host, port = gateway.n5g_eir_sockets[0]
        async with httpx.AsyncClient(http1=False, http2=True,
                                     base_url=f"http://{host}:{port}") as amf:
            without = await amf.get(EQUIPMENT_STATUS_PATH, params=params)
            assert without.status_code == expected[0]
            if expected[0] == 401:
                assert without.headers["www-authenticate"].startswith("Bearer")
                assert without.headers["content-type"] == "application/problem+json"
            with_token = await amf.get(EQUIPMENT_STATUS_PATH, params=params,
                                       headers={"authorization": f"Bearer {valid}"})
            assert with_token.status_code == expected[1]
            assert with_token.json() == {"status": "BLACKLISTED"}
