"""OAuth 2.0 access tokens on N5g-eir (TS 33.501 §13.4.1, TS 29.500 §6.7.3): a bearer token
(RFC 6750) in ``Authorization``, a JWT (RFC 7519) signed by the NRF (JWS compact, RFC 7515;
RS256 or ES256, RFC 7518 §3.3, §3.4), with the AccessTokenClaims of TS 29.510 §6.3.5.2.4.

Checked as TS 33.501 §13.4.1.1.2 lists it: the signature against the configured public keys,
``exp`` (and ``nbf`` when present) with a small leeway, ``aud`` naming one of the configured
audiences (the NF type ``5G_EIR`` and/or this NF's instance ID), ``scope`` naming
``n5g-eir-eic`` (the service's scope in TS 29.511's securitySchemes); and as far as configured,
``iss`` naming one of the NRFs (their NF instance IDs) whose tokens are accepted, and ``sub``
one of the NF service consumers (AMF instance IDs) allowed to ask. A missing token gets 401
with ``WWW-Authenticate: Bearer``; an invalid one (signature, time, audience, issuer) 401 with
``error="invalid_token"``; a valid one without the scope, or of a consumer not allowed, 403
with ``error="insufficient_scope"`` (RFC 6750 §3.1: it does not grant this request).

AMFs reuse a token until it expires: a verified token is remembered (bounded) with its expiry,
so its signature is checked once, not per request.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.n5g_eir.problem import Response, problem

SCOPE = "n5g-eir-eic"  # TS 29.511 securitySchemes oAuth2ClientCredentials
LEEWAY_SECONDS = 30.0  # clock skew allowed on exp and nbf
_CACHE_SIZE = 4096
_MAX_TOKEN = 8192  # bytes; a longer Authorization value is not parsed


class OAuth2Unavailable(Exception):
    """The ``cryptography`` package, needed to check signatures, is not installed."""


def load_public_keys(paths: Sequence[str]) -> list[Any]:
    """PEM public keys or certificates (RSA or EC P-256). Raises ValueError naming the file."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise OAuth2Unavailable(
            "OAuth2 needs the Python package cryptography (pip install 'eir-gateway[oauth2]')"
        ) from exc
    keys: list[Any] = []
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        key: Any
        try:
            if b"BEGIN CERTIFICATE" in data:
                key = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"{path} is not a PEM public key or certificate ({exc})") from None
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"{path}: only RSA and EC public keys verify RS256/ES256 tokens")
        keys.append(key)
    return keys


def _b64(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


class _Invalid(Exception):
    pass


class AccessTokenVerifier:
    def __init__(self, keys: Sequence[Any], audiences: Sequence[str],
                 clock: Callable[[], float] = time.time, issuers: Sequence[str] = (),
                 subjects: Sequence[str] = ()) -> None:
        """``issuers``, ``subjects``: the accepted ``iss`` and ``sub`` values; empty: any."""
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self._rsa = [k for k in keys if isinstance(k, rsa.RSAPublicKey)]
        self._ec = [k for k in keys if isinstance(k, ec.EllipticCurvePublicKey)]
        self._audiences = frozenset(audiences)
        self._issuers = frozenset(issuers)
        self._subjects = frozenset(subjects)
        self._clock = clock
        self._verified: dict[bytes, float] = {}  # token -> exp
        self._missing = problem(401, "an OAuth2 access token is required",
                                headers=((b"www-authenticate", b'Bearer scope="n5g-eir-eic"'),))

    def check(self, authorization: bytes | None) -> Response | None:
        """None when the request may proceed, else the 401/403 to answer."""
        if authorization is None:
            return self._missing
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return self._missing
        token = token.strip()
        now = self._clock()
        exp = self._verified.get(token)
        if exp is not None and now < exp + LEEWAY_SECONDS:
            return None
        try:
            claims = self._verify(token)
            exp = self._claims(claims, now)
        except _Invalid as exc:
            return _rejected(401, "invalid_token", str(exc))
        if SCOPE not in str(claims.get("scope", "")).split():
            return _rejected(403, "insufficient_scope", f"the token's scope lacks {SCOPE}")
        if self._subjects and not _one_of(claims.get("sub"), self._subjects):
            return _rejected(403, "insufficient_scope",
                             "the token's subject (sub) is not a consumer allowed here")
        if len(self._verified) >= _CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = exp
        return None

    def _verify(self, token: bytes) -> dict[str, Any]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        if len(token) > _MAX_TOKEN or token.count(b".") != 2:
            raise _Invalid("not a JWS compact serialization")
        head, body, signature_part = token.split(b".")
        try:
            header = json.loads(_b64(head))
            claims = json.loads(_b64(body))
            signature = _b64(signature_part)
        except (ValueError, binascii.Error, RecursionError):  # RecursionError: nested too deep
            raise _Invalid("not base64url JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _Invalid("header or claims not a JSON object")
        if "crit" in header:
            # RFC 7515 §4.1.11: extensions the recipient must understand; this one knows none.
            raise _Invalid("critical header extensions not understood (crit)")
        signed = head + b"." + body
        alg = header.get("alg")
        if alg == "RS256":
            for rsa_key in self._rsa:
                try:
                    rsa_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                    return claims
                except InvalidSignature:
                    continue
        elif alg == "ES256":
            if len(signature) != 64:  # RFC 7518 §3.4: R and S, 32 octets each
                raise _Invalid("ES256 signature is not 64 octets")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            for ec_key in self._ec:
                try:
                    ec_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
                    return claims
                except InvalidSignature:
                    continue
        else:
            raise _Invalid(f"algorithm {str(alg)[:16]!r} not accepted (RS256, ES256)")
        raise _Invalid("signature does not verify with any configured key")

    def _claims(self, claims: dict[str, Any], now: float) -> float:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _Invalid("no exp claim")
        if now >= exp + LEEWAY_SECONDS:
            raise _Invalid("the token has expired")
        nbf = claims.get("nbf", 0)
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            raise _Invalid("nbf is not a NumericDate")  # RFC 7519 §4.1.5 (it was ignored)
        if now + LEEWAY_SECONDS < nbf:
            raise _Invalid("the token is not valid yet")
        aud = claims.get("aud")
        # RFC 7519 §4.1.3: a string or an array of strings; anything else names no NF (and an
        # object in the array, unhashable, raised TypeError).
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self._audiences for a in audiences):
            raise _Invalid("the token is not meant for this NF (aud)")
        if self._issuers and not _one_of(claims.get("iss"), self._issuers):
            raise _Invalid("the token was not issued by an accepted NRF (iss)")
        return float(exp)


def _one_of(value: object, accepted: frozenset[str]) -> bool:
    """A string claim (iss, sub: RFC 7519 §4.1.1, §4.1.2) among the accepted; a claim of another
    JSON type is not (a list or object, unhashable, raised TypeError)."""
    return isinstance(value, str) and value in accepted


def _rejected(status: int, error: str, description: str) -> Response:
    # RFC 6750 §3: the challenge names the error; the description is ASCII without quotes.
    text = description.replace('"', "'")
    challenge = f'Bearer error="{error}", error_description="{text}", scope="{SCOPE}"'
    return problem(status, description, headers=((b"www-authenticate", challenge.encode()),))
