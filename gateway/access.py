"""Who is calling and what they may call: the one API key check, and model resolution (no I/O).

The public id part of `sk-<public id><secret>` finds the key in the snapshot; the secret part is compared
as HMAC-SHA256(pepper, secret) in constant time. An unknown public id still costs one HMAC and one
comparison, so response times do not tell an attacker which public ids exist.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from gateway.refusal import Refusal, Why
from gateway.snapshot import KeyEntry, ModelEntry, Snapshot
from store.security import API_KEY_PREFIX, Hasher, split

_UNKNOWN_DIGEST = "0" * 64


def authenticate(
    snapshot: Snapshot, hasher: Hasher, authorization: str | None, now: datetime
) -> KeyEntry | Refusal:
    if not authorization:
        return Refusal(
            Why.INVALID_API_KEY, "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'."
        )
    scheme, _, value = authorization.partition(" ")
    presented = value.strip() if scheme.lower() == "bearer" else authorization.strip()
    parts = split(presented, API_KEY_PREFIX)
    entry = snapshot.keys.get(parts[0]) if parts is not None else None
    digest = hasher.digest(parts[1] if parts is not None else "x")
    stored = entry.secret_hash if entry is not None else _UNKNOWN_DIGEST
    if not hmac.compare_digest(digest, stored) or entry is None:
        shown = f"{presented[:6]}...{presented[-4:]}" if len(presented) > 12 else "***"
        return Refusal(Why.INVALID_API_KEY, f"Incorrect API key provided: {shown}.")
    if not entry.enabled:
        return Refusal(Why.INVALID_API_KEY, "This API key is disabled.")
    if entry.expires_at is not None and entry.expires_at <= now:
        return Refusal(Why.INVALID_API_KEY, "This API key has expired.")
    return entry


def resolve_model(snapshot: Snapshot, key: KeyEntry, model: Any) -> ModelEntry | Refusal:
    if model is None or model == "":
        return Refusal(Why.MODEL_MISSING, "you must provide a model parameter", "model")
    if not isinstance(model, str):
        return Refusal(
            Why.INVALID_REQUEST, "Invalid value for `model`: expected a string (a model id).", "model"
        )
    entry = lookup(snapshot, key.workspace, model)
    if entry is None:
        return Refusal(
            Why.MODEL_NOT_FOUND,
            f"The model `{model}` does not exist or you do not have access to it.",
            "model",
        )
    if key.allowed_models is not None and model not in key.allowed_models:
        return Refusal(
            Why.MODEL_FORBIDDEN, f"This API key is not allowed to use the model `{model}`.", "model"
        )
    return entry


def lookup(snapshot: Snapshot, workspace: str, name: str) -> ModelEntry | None:
    """The model `name` means to a workspace: an enabled offering visible to it, else its own serving.

    A workspace's serving may not take the public name of an offering visible to it (refused at deploy
    time, on the name field), so both exist only where ops made the offering from that very serving
    (the demo does): the offering, with its prices, is the one called."""
    offered = snapshot.models.get(name)
    if offered is not None and offered.enabled and offered.visible_to(workspace):
        return offered
    return snapshot.own.get(workspace, {}).get(name)


def usable_models(snapshot: Snapshot, key: KeyEntry) -> list[ModelEntry]:
    """The offerings visible to the key's workspace and the workspace's own servings."""
    names = {*snapshot.models, *snapshot.own.get(key.workspace, {})}
    found = (lookup(snapshot, key.workspace, name) for name in names)
    return [
        m
        for m in found
        if m is not None and (key.allowed_models is None or m.public_id in key.allowed_models)
    ]
