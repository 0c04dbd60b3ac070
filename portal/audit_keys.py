"""The keys that seal the audit chain: held outside the database, named by an id so they can rotate.

A row's hash is an HMAC under the key its `key_id` names, so whoever can write the database but not
read these keys cannot rewrite a row and rehash the chain after it. Where they live:

- `MODELFLEET_AUDIT_KEYS` (`{"2": "…", "1": "…"}`): every replica of the portal must share them, as
  they share the pepper. The current key is `MODELFLEET_AUDIT_KEY_ID`, or the highest id.
- otherwise files `<data_dir>/audit-keys/<id>`, the first generated on first start (mode 0600);
  `python -m portal rotate-audit-key` adds the next. Old keys stay: older rows are verified with them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from portal.settings import Settings

KEY_DIR = "audit-keys"


class AuditKeyError(RuntimeError):
    """The audit keys are missing or inconsistent; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class AuditKeys:
    current_id: str
    keys: dict[str, bytes]

    def seal(self, key_id: str, message: str) -> str:
        """HMAC-SHA256 of `message` under key `key_id` (KeyError when this portal lacks it)."""
        return hmac.new(self.keys[key_id], message.encode(), hashlib.sha256).hexdigest()

    def matches(self, key_id: str, message: str, seal: str) -> bool:
        return key_id in self.keys and hmac.compare_digest(self.seal(key_id, message), seal)


def _order(key_id: str) -> tuple[int, str]:
    return (int(key_id), "") if key_id.isdigit() else (-1, key_id)


def _from_settings(settings: Settings) -> AuditKeys | None:
    if not settings.audit_keys:
        return None
    keys = {kid: value.get_secret_value().encode() for kid, value in settings.audit_keys.items()}
    current = settings.audit_key_id or max(keys, key=_order)
    if current not in keys:
        raise AuditKeyError(f"MODELFLEET_AUDIT_KEY_ID names {current!r}, not one of MODELFLEET_AUDIT_KEYS")
    return AuditKeys(current, keys)


def _from_files(directory: Path) -> AuditKeys | None:
    if not directory.is_dir():
        return None
    keys = {p.name: p.read_bytes().strip() for p in directory.iterdir() if p.is_file() and p.name.isdigit()}
    return AuditKeys(max(keys, key=_order), keys) if keys else None


def _write_key(directory: Path, key_id: str) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / key_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_urlsafe(48).encode())


def load_audit_keys(settings: Settings) -> AuditKeys:
    """The configured keys or the files under the data directory; never creates one (a verifier
    must use the portal's own keys)."""
    keys = _from_settings(settings) or _from_files(settings.data_dir / KEY_DIR)
    if keys is None:
        raise AuditKeyError(
            f"no audit keys: set MODELFLEET_AUDIT_KEYS as the portal has it, or point MODELFLEET_DATA_DIR "
            f"at the portal's data directory ({settings.data_dir / KEY_DIR} holds none)"
        )
    return keys


def load_or_create_audit_keys(settings: Settings) -> AuditKeys:
    """The portal's keys; on first start without configured keys, key 1 is generated."""
    configured = _from_settings(settings)
    if configured is not None:
        return configured
    directory = settings.data_dir / KEY_DIR
    found = _from_files(directory)
    if found is not None:
        return found
    with contextlib.suppress(FileExistsError):  # another process made it first
        _write_key(directory, "1")
    return load_audit_keys(settings)


def rotate(settings: Settings) -> str:
    """Add the next key file and return its id; new rows use it once the portal restarts."""
    if settings.audit_keys:
        raise AuditKeyError("the audit keys come from MODELFLEET_AUDIT_KEYS: add the next key there")
    current = _from_files(settings.data_dir / KEY_DIR)
    key_id = str(int(current.current_id) + 1) if current else "1"
    _write_key(settings.data_dir / KEY_DIR, key_id)
    return key_id
