"""Secret references of MaaS targets (`env:NAME`, `file:/path`): where they may point, and their values.

A reference makes the gateway send a value to an upstream URL that a platform admin chose, so an
unbounded one sends anything the server can read: its pepper, its database URL, any one-line file.
References therefore resolve only inside a namespace set by the operator — environment variables
with `maas_secret_env_prefix`, files inside `maas_secrets_dir` (after resolving symlinks) — and never
to the server's own settings (`MODELFLEET_*`), whatever the prefix says. The portal refuses a
reference outside the namespace when the target is saved (`problem`), and the gateway resolves only
inside it (`resolve`), so a row written before these rules, or straight into the database, leaks
nothing either.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from gateway.settings import GatewaySettings

log = logging.getLogger("modelfleet.gateway")
SETTINGS_PREFIX = "MODELFLEET_"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def problem(ref: str, settings: GatewaySettings) -> str | None:
    """Why `ref` may not be used, or None when it may."""
    kind, _, where = ref.partition(":")
    if kind == "env":
        prefix = settings.maas_secret_env_prefix
        if not _ENV_NAME.match(where):
            return "env:NAME needs a variable name (letters, digits, underscores)"
        if where.upper().startswith(SETTINGS_PREFIX):
            return f"{SETTINGS_PREFIX}* variables are the server's own settings, never a target's secret"
        if not where.startswith(prefix):
            return f"environment variables for targets must start with {prefix} (maas_secret_env_prefix)"
        return None
    if kind == "file":
        directory = settings.maas_secrets_dir
        if directory is None:
            return "file references are off: the operator sets MODELFLEET_MAAS_SECRETS_DIR to allow them"
        root = directory.resolve()
        target = Path(where).resolve()  # symlinks and `..` followed before the check
        if not target.is_relative_to(root) or target == root:
            return f"files for targets must be inside {root} (maas_secrets_dir)"
        return None
    return "must be env:NAME or file:/absolute/path"


def resolve(ref: str | None, settings: GatewaySettings) -> str | None:
    """The secret `ref` names; None when unset, outside the namespace, missing or unreadable (logged)."""
    if not ref:
        return None
    refused = problem(ref, settings)
    if refused is not None:
        log.warning("gateway: secret %s refused: %s", ref, refused)
        return None
    kind, _, where = ref.partition(":")
    try:
        if kind == "env":
            return os.environ.get(where) or None
        return Path(where).resolve().read_text().strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("gateway: secret %s unreadable: %s", ref, exc)
        return None
