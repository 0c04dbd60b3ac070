"""The long-lived parts of one portal process, built once by the app factory and shared by requests."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from portal.repository import StackRepository
from portal.settings import Settings
from store.security import Hasher


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    hasher: Hasher
    repository: StackRepository
    extras: dict[str, Any] = field(default_factory=dict)  # caches with the process's lifetime

    @functools.cached_property
    def jwks_url(self) -> str:
        issuer = self.settings.oidc_issuer
        if self.settings.oidc_jwks_url:
            return self.settings.oidc_jwks_url
        if not issuer:
            raise RuntimeError("OIDC is not configured (MODELFLEET_OIDC_ISSUER)")
        discovery = httpx.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10)
        discovery.raise_for_status()
        return str(discovery.json()["jwks_uri"])

    def jwks(self) -> jwt.PyJWKClient:
        client = self.extras.get("jwks")
        if client is None:
            client = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300, timeout=10)
            self.extras["jwks"] = client
        return client
