"""Secrets the portal hands out once and then only recognises: API keys and local tokens.

A secret is stored as HMAC-SHA256(pepper, secret). The pepper lives outside the database, so a
leaked table alone cannot be brute-forced offline.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

ALPHABET = string.ascii_letters + string.digits
PUBLIC_ID_LEN = 12
SECRET_LEN = 40


def random_text(length: int, alphabet: str = ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def load_or_create_pepper(configured: str | None, data_dir: Path) -> bytes:
    """The configured pepper, or one generated on first start and kept in `<data_dir>/pepper`."""
    if configured:
        return configured.encode()
    path = data_dir / "pepper"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


def load_pepper(configured: str | None, data_dir: Path) -> bytes:
    """The configured pepper, or the one the control plane generated; never creates one (the data
    plane must hash exactly as the control plane did, so a missing pepper is an error)."""
    if configured:
        return configured.encode()
    path = data_dir / "pepper"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no pepper: set MODELFLEET_PEPPER (as the portal has it) or point MODELFLEET_DATA_DIR at the "
            f"portal's data directory ({path} does not exist)"
        ) from None


@dataclass(frozen=True, slots=True)
class Hasher:
    pepper: bytes

    def digest(self, secret: str) -> str:
        return hmac.new(self.pepper, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, secret: str, stored: str) -> bool:
        return hmac.compare_digest(self.digest(secret), stored)


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A freshly made credential: `value` is shown once, the rest is stored."""

    prefix: str
    public_id: str
    secret: str

    @property
    def value(self) -> str:
        return f"{self.prefix}{self.public_id}{self.secret}"

    @property
    def masked(self) -> str:
        return f"{self.prefix}{self.public_id}…{self.secret[-4:]}"


def issue(prefix: str) -> IssuedSecret:
    return IssuedSecret(
        prefix, random_text(PUBLIC_ID_LEN, string.ascii_lowercase + string.digits), random_text(SECRET_LEN)
    )


def split(value: str, prefix: str) -> tuple[str, str] | None:
    """(public id, secret) of a credential with `prefix`, or None when it has not the shape."""
    if not value.startswith(prefix):
        return None
    body = value[len(prefix) :]
    if len(body) != PUBLIC_ID_LEN + SECRET_LEN:
        return None
    return body[:PUBLIC_ID_LEN], body[PUBLIC_ID_LEN:]


API_KEY_PREFIX = "sk-"
USER_TOKEN_PREFIX = "mf_"
