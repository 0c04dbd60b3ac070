"""The console's session cookie: the user's portal token, encrypted and authenticated.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256, with its creation time) whose key is derived
from the server pepper, so it can be neither read nor forged without the pepper, and a stolen database
does not help. `cryptography` is already a runtime dependency (PyJWT[crypto]), so no new package is
needed. The cookie is HttpOnly (page scripts never see the token) and SameSite=Lax; requests that
change something with cookie auth must also carry `X-Modelfleet-Console: 1` (see `console.bridge`).

No server-side session table: signing out deletes the cookie, and the token itself stays valid until it
expires or is revoked, as it would on the command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "mf_console"
LANG_COOKIE = "mf_lang"
WORKSPACE_COOKIE = "mf_ws"
CSRF_HEADER = "x-modelfleet-console"
_KEY_CONTEXT = b"modelfleet console session v1"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    token: str
    username: str


class SessionCodec:
    """Seals and opens session cookies; `max_age` seconds after sealing a cookie no longer opens."""

    def __init__(self, pepper: bytes, max_age: int, clock: Callable[[], float] = time.time) -> None:
        # A key of its own for the console (derived, not the pepper itself): a Fernet key leaking
        # through some future bug must not reveal what hashes API keys and tokens.
        key = hmac.new(pepper, _KEY_CONTEXT, hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.max_age = max_age
        self._clock = clock  # tests move it; Fernet's own clock is out of reach (Rust, cryptography 51)

    def seal(self, session: ConsoleSession) -> str:
        payload = json.dumps({"t": session.token, "u": session.username}, separators=(",", ":"))
        return self._fernet.encrypt_at_time(payload.encode(), int(self._clock())).decode("ascii")

    def open(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie:
            return None
        try:
            sealed, now = cookie.encode("ascii"), int(self._clock())
            data = json.loads(self._fernet.decrypt_at_time(sealed, ttl=self.max_age, current_time=now))
        except (InvalidToken, UnicodeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), str):
            return None
        return ConsoleSession(token=data["t"], username=str(data.get("u", "")))
