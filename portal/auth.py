"""Who is calling, and what they may see.

Two kinds of bearer token: local tokens (`mf_…`, including the bootstrap admin's) and OIDC JWTs
validated against the issuer's JWKS. OIDC users are created on first sight and their platform and
workspace roles follow the groups claim on every sign-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import audit
from portal.db import utcnow
from portal.errors import Forbidden, NotFound, Unauthorized
from portal.models import Membership, User, UserToken, Workspace, WorkspaceRole
from portal.security import USER_TOKEN_PREFIX, split
from portal.services import Services

LOGIN_AUDIT_INTERVAL = timedelta(hours=1)  # a sign-in is audited at most this often per user


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    is_platform_admin: bool
    roles: dict[str, str] = field(default_factory=dict)  # workspace slug -> role
    workspace_ids: dict[str, int] = field(default_factory=dict)

    def role_in(self, workspace: str) -> str | None:
        if self.is_platform_admin:
            return WorkspaceRole.admin
        return self.roles.get(workspace)


bearer = HTTPBearer(auto_error=False, description="a local token (mf_…) or an OIDC access token (JWT)")


def _principal(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        is_platform_admin=user.is_platform_admin,
        roles={m.workspace.slug: m.role for m in user.memberships},
        workspace_ids={m.workspace.slug: m.workspace_id for m in user.memberships},
    )


def _local(session: Session, services: Services, token: str) -> User | None:
    parts = split(token, USER_TOKEN_PREFIX)
    if parts is None:
        return None
    row = session.scalar(select(UserToken).where(UserToken.public_id == parts[0]))
    if row is None or not services.hasher.matches(parts[1], row.secret_hash):
        return None
    if row.expires_at is not None and row.expires_at.replace(tzinfo=row.expires_at.tzinfo or UTC) <= utcnow():
        return None
    return session.get(User, row.user_id)


def _oidc_claims(services: Services, token: str) -> dict[str, Any]:
    settings = services.settings
    if not settings.oidc_issuer:
        raise Unauthorized("bearer token is not a local token and OIDC is not configured")
    try:
        key = services.jwks().get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
            audience=settings.oidc_audience,
            issuer=settings.oidc_issuer,
            options={"require": ["exp", "iss", "sub"], "verify_aud": settings.oidc_audience is not None},
            leeway=30,
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized("token audience is not this portal") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("token issuer is not the configured OIDC issuer") from exc
    except jwt.PyJWKClientError as exc:
        raise Unauthorized(f"token signing key not found at the issuer: {exc}") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    return claims


def _sync_oidc_user(session: Session, services: Services, claims: dict[str, Any]) -> User:
    settings = services.settings
    subject = str(claims["sub"])
    raw_groups = claims.get(settings.oidc_groups_claim) or []
    groups = [str(g) for g in (raw_groups if isinstance(raw_groups, list) else [raw_groups])]
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    username = str(claims.get("preferred_username") or claims.get("email") or subject)
    if user is None:
        if session.scalar(select(User).where(User.username == username)) is not None:
            username = f"{username}@{subject}"
        user = User(username=username, oidc_subject=subject, memberships=[])
        session.add(user)
    user.email = claims.get("email") or user.email
    user.display_name = str(claims.get("name") or user.display_name or username)
    user.is_platform_admin = any(g in settings.oidc_admin_groups for g in groups)
    pattern = re.compile(settings.oidc_workspace_group_pattern)
    wanted: dict[str, str] = {}
    for group in groups:
        match = pattern.match(group)
        if match and wanted.get(match["workspace"]) != WorkspaceRole.admin:
            wanted[match["workspace"]] = match["role"]
    workspaces = {w.slug: w for w in session.scalars(select(Workspace).where(Workspace.slug.in_(wanted)))}
    kept = [m for m in user.memberships if m.source != "oidc"]
    for slug, role in wanted.items():
        if slug in workspaces and not any(m.workspace_id == workspaces[slug].id for m in kept):
            kept.append(Membership(workspace=workspaces[slug], role=role, source="oidc"))
    user.memberships = kept
    session.flush()
    return user


def _note_login(session: Session, user: User, method: str) -> None:
    now = utcnow()
    last = user.last_login_at
    if last is not None and last.replace(tzinfo=last.tzinfo or UTC) > now - LOGIN_AUDIT_INTERVAL:
        return
    user.last_login_at = now
    audit.record(
        session, actor=user.username, action="Login", resource_type="User", resource_id=user.id, detail=method
    )


def authenticate(session: Session, services: Services, token: str) -> Principal:
    user = _local(session, services, token)
    method = "local token"
    if user is None:
        if token.startswith(USER_TOKEN_PREFIX) or token.count(".") != 2:
            raise Unauthorized("unknown or expired token")
        user = _sync_oidc_user(session, services, _oidc_claims(services, token))
        method = "oidc"
    if user.disabled:
        raise Unauthorized("user is disabled")
    _note_login(session, user, method)
    return _principal(user)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Any:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with services.sessions() as session, session.begin():
        return authenticate(session, services, credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_platform_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_platform_admin:
        raise Forbidden("this needs the platform admin (ops) role")
    return principal


AdminDep = Annotated[Principal, Depends(require_platform_admin)]


def workspace_for(session: Session, principal: Principal, slug: str, *, admin: bool = False) -> Workspace:
    """The workspace `slug` if the caller belongs to it (as admin when `admin`); 404 otherwise, so
    outsiders cannot tell which workspaces exist."""
    role = principal.role_in(slug)
    workspace = session.scalar(select(Workspace).where(Workspace.slug == slug)) if role else None
    if workspace is None:
        raise NotFound(f"workspace {slug!r} not found")
    if admin and role != WorkspaceRole.admin:
        raise Forbidden(f"this needs the admin role in workspace {slug!r}")
    return workspace
