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

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import audit
from portal.errors import Forbidden, NotFound, Unauthorized, Unavailable
from portal.messages import msg
from portal.services import Services
from store.db import utcnow
from store.models import Membership, User, UserToken, Workspace, WorkspaceRole
from store.security import USER_TOKEN_PREFIX, split

LOGIN_AUDIT_INTERVAL = timedelta(hours=1)  # a sign-in is audited at most this often per user
# Asymmetric algorithms only: an HMAC algorithm would let anyone holding the public key sign tokens.
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


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


def _signing_key(services: Services, token: str) -> Any:
    try:
        return services.jwks().get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError as exc:
        raise Unavailable(f"cannot fetch the OIDC issuer's signing keys: {exc}") from exc
    except jwt.PyJWKClientError as exc:
        kid = jwt.get_unverified_header(token).get("kid")
        raise Unauthorized(f"token signing key (kid {kid!r}) is not among the issuer's keys") from exc
    except (httpx.HTTPError, KeyError, ValueError) as exc:  # discovery document unreachable or odd
        raise Unavailable(f"OIDC discovery failed for {services.settings.oidc_issuer}: {exc!r}") from exc


def _oidc_claims(services: Services, token: str) -> dict[str, Any]:
    """The verified claims of an OIDC token; a 401 that says which check failed otherwise."""
    settings = services.settings
    if not settings.oidc_issuer:
        raise Unauthorized("bearer token is not a local token and OIDC is not configured")
    try:
        key = _signing_key(services, token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(OIDC_ALGORITHMS),
            audience=settings.oidc_audience,
            issuer=settings.oidc_issuer,
            options={"require": ["exp", "iss", "sub"], "verify_aud": settings.oidc_audience is not None},
            leeway=30,
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized(f"token audience is not this portal ({settings.oidc_audience!r})") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized(
            f"token issuer is not the configured OIDC issuer ({settings.oidc_issuer!r})"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthorized("token signature does not verify with the issuer's key") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    return claims


def _groups(services: Services, claims: dict[str, Any]) -> list[str]:
    raw = claims.get(services.settings.oidc_groups_claim) or []
    return [str(g) for g in (raw if isinstance(raw, list) else [raw])]


def _wanted_roles(services: Services, groups: list[str]) -> dict[str, str]:
    """Workspace slug -> role from the groups; admin wins when both roles are granted."""
    pattern = re.compile(services.settings.oidc_workspace_group_pattern)
    wanted: dict[str, str] = {}
    for group in groups:
        match = pattern.match(group)
        if match and wanted.get(match["workspace"]) != WorkspaceRole.admin:
            wanted[match["workspace"]] = match["role"]
    return wanted


def _roles_state(user: User) -> dict[str, Any]:
    return {
        "is_platform_admin": user.is_platform_admin,
        "workspaces": {
            m.workspace.slug: m.role for m in sorted(user.memberships, key=lambda m: m.workspace_id)
        },
    }


def _sync_oidc_user(session: Session, services: Services, claims: dict[str, Any]) -> User:
    """Create the user on first sight; make platform and workspace roles follow the groups claim.

    Memberships granted by OIDC are reconciled in place (role updated, removed when the group is
    gone); memberships added locally by a workspace admin are left alone. A change of roles is
    audited, so who lost or gained access when is on record.
    """
    subject = str(claims["sub"])
    groups = _groups(services, claims)
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    username = str(claims.get("preferred_username") or claims.get("email") or subject)[:200]
    if user is None:
        if session.scalar(select(User).where(User.username == username)) is not None:
            username = f"{username}@{subject}"[:200]
        user = User(username=username, oidc_subject=subject, memberships=[])
        session.add(user)
        session.flush()
        before = None
    else:
        before = _roles_state(user)
    user.email = claims.get("email") or user.email
    user.display_name = str(claims.get("name") or user.display_name or username)
    user.is_platform_admin = any(g in services.settings.oidc_admin_groups for g in groups)
    wanted = _wanted_roles(services, groups)
    workspaces = {w.slug: w for w in session.scalars(select(Workspace).where(Workspace.slug.in_(wanted)))}
    wanted_ids = {workspaces[slug].id: role for slug, role in wanted.items() if slug in workspaces}
    have = {m.workspace_id for m in user.memberships}
    for m in list(user.memberships):
        if m.source != "oidc":
            continue
        if m.workspace_id in wanted_ids:
            m.role = wanted_ids[m.workspace_id]
        else:
            user.memberships.remove(m)
    for slug, workspace in workspaces.items():
        if workspace.id not in have:
            user.memberships.append(Membership(workspace=workspace, role=wanted[slug], source="oidc"))
    session.flush()
    after = _roles_state(user)
    if after != before:
        audit.record(
            session,
            actor=user.username,
            action="SyncOIDCRoles",
            resource_type="User",
            resource_id=user.id,
            before=before,
            after=after,
            detail="roles follow the OIDC groups claim",
        )
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
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with services.sessions() as session, session.begin():
        principal = authenticate(session, services, credentials.credentials)
    request.state.principal = principal  # who a refused attempt is audited against (portal.refusals)
    return principal


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
        raise NotFound(msg("workspace {slug!r} not found", slug=slug))
    if admin and role != WorkspaceRole.admin:
        raise Forbidden(msg("this needs the admin role in workspace {slug!r}", slug=slug))
    return workspace
