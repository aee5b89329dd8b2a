"""Bearer tokens of the provisioning API (RFC 6750) and their roles.

A token is written ``NAME:ROLES:SECRET`` (``ROLES`` joined by ``+``), in ``api.tokens`` or one a
line in ``api.token_file`` (``#`` starts a comment). Roles: ``read`` (every GET), ``write``
(create, update, delete, import), ``pii`` (IMSIs in clear; masked otherwise). ``NAME`` is the
actor the audit log records (``api:NAME``).

A presented token is compared with every configured one, each time, through SHA-256 digests and
``hmac.compare_digest``: the time taken says nothing about which token, or how much of one,
matched (no early exit, equal lengths).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROLES = ("read", "write", "pii")
MIN_SECRET = 16  # characters: a short secret is guessable
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# RFC 6750 §2.1 b64token
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    roles: frozenset[str]
    digest: bytes  # SHA-256 of the secret; the secret itself is not kept


def parse_token(text: str) -> Token:
    """``NAME:ROLES:SECRET``; raises ValueError saying what is wrong (never echoing the secret)."""
    parts = text.strip().split(":", 2)
    if len(parts) != 3:
        raise ValueError("a token is NAME:ROLES:SECRET (roles joined by +)")
    name, roles, secret = parts
    if not _NAME.match(name):
        raise ValueError(f"token name {name!r}: letters, digits, '_', '.', '-' (1-64)")
    role_set = frozenset(r for r in roles.split("+") if r)
    unknown = sorted(role_set - set(ROLES))
    if unknown or not role_set:
        raise ValueError(f"token {name}: roles {roles!r}: each one of {', '.join(ROLES)}")
    if len(secret) < MIN_SECRET or not _B64TOKEN.match(secret):
        raise ValueError(
            f"token {name}: the secret must be at least {MIN_SECRET} characters of "
            "A-Z a-z 0-9 - . _ ~ + / (RFC 6750 b64token)"
        )
    return Token(name, role_set, hashlib.sha256(secret.encode()).digest())


def read_token_file(path: Path) -> list[Token]:
    """The tokens of a token file; ValueError names the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            tokens.append(parse_token(line))
        except ValueError as exc:
            raise ValueError(f"{path}: line {number}: {exc}") from None
    return tokens


def check_unique(tokens: Iterable[Token]) -> str | None:
    """Two tokens with one name would make the audit log ambiguous; one secret twice, the
    roles ambiguous."""
    names: set[str] = set()
    digests: set[bytes] = set()
    for t in tokens:
        if t.name in names:
            return f"token name {t.name!r} is used twice"
        if t.digest in digests:
            return f"token {t.name}: the same secret as another token"
        names.add(t.name)
        digests.add(t.digest)
    return None


class TokenTable:
    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, secret: str) -> Token | None:
        """The token whose secret this is, comparing with all of them in constant time."""
        presented = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(presented, token.digest):
                found = token
        return found
