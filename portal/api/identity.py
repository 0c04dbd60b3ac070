"""Workspaces, their members and quotas; users and their local tokens; `GET /api/me`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from portal import audit
from portal.api.common import SLUG, Page, PageParams, page_params
from portal.auth import AdminDep, Principal, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.errors import Conflict, NotFound
from portal.keys import set_workspace_quota_refresh
from portal.messages import msg
from store.models import Membership, User, UserToken, Workspace, WorkspaceRole
from store.security import USER_TOKEN_PREFIX, issue

router = APIRouter(prefix="/api", tags=["identity"])


class WorkspaceIn(BaseModel):
    slug: str = Field(pattern=SLUG, description="2-63 lowercase letters, digits or '-'")
    name: str = Field(min_length=1, max_length=200)
    # strict: JSON `false` would otherwise pass as a quota of 0 tokens (and `true` as 1).
    token_quota: int | None = Field(
        None, ge=0, strict=True, description="tokens per refresh period; null is unlimited"
    )
    quota_refresh: Literal["day", "week", "month"] = "month"


class WorkspaceOut(BaseModel):
    slug: str
    name: str
    token_quota: int | None
    quota_refresh: str
    role: str | None = None
    created_at: datetime


class QuotaIn(BaseModel):
    token_quota: int | None = Field(ge=0, strict=True, description="null is unlimited")
    quota_refresh: Literal["day", "week", "month"] = "month"


class MemberIn(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    role: WorkspaceRole


class MemberOut(BaseModel):
    username: str
    role: str
    source: str


class UserIn(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
    display_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=320)
    is_platform_admin: bool = False


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    email: str | None
    is_platform_admin: bool
    disabled: bool


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    token: str = Field(description="shown once; only its hash is kept")
    expires_at: datetime | None


class Me(BaseModel):
    username: str
    is_platform_admin: bool
    workspaces: dict[str, str]


def _workspace_out(w: Workspace, role: str | None = None) -> WorkspaceOut:
    return WorkspaceOut(
        slug=w.slug,
        name=w.name,
        token_quota=w.token_quota,
        quota_refresh=w.quota_refresh,
        role=role,
        created_at=w.created_at,
    )


def _state(w: Workspace) -> dict[str, object]:
    return {"slug": w.slug, "name": w.name, "token_quota": w.token_quota, "quota_refresh": w.quota_refresh}


@router.get("/me", response_model=Me)
def me(principal: PrincipalDep) -> Me:
    return Me(
        username=principal.username, is_platform_admin=principal.is_platform_admin, workspaces=principal.roles
    )


@router.get("/workspaces", response_model=Page[WorkspaceOut])
def list_workspaces(
    session: SessionDep, principal: PrincipalDep, paging: Annotated[PageParams, Depends(page_params)]
) -> Page[WorkspaceOut]:
    query = select(Workspace)
    if not principal.is_platform_admin:
        query = query.where(Workspace.slug.in_(list(principal.roles)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Workspace.slug).offset(paging.offset).limit(paging.page_size)).all()
    return Page(
        items=[_workspace_out(w, principal.role_in(w.slug)) for w in rows],
        total=total,
        page=paging.page,
        page_size=paging.page_size,
    )


@router.post("/workspaces", response_model=WorkspaceOut, status_code=201)
def create_workspace(body: WorkspaceIn, session: SessionDep, principal: AdminDep) -> WorkspaceOut:
    with session.begin():
        if session.scalar(select(Workspace).where(Workspace.slug == body.slug)) is not None:
            raise Conflict(msg("workspace {slug!r} already exists", slug=body.slug))
        w = Workspace(**body.model_dump())
        session.add(w)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="CreateWorkspace",
            resource_type="Workspace",
            resource_id=w.slug,
            workspace=w.slug,
            after=_state(w),
        )
    return _workspace_out(w, WorkspaceRole.admin)


@router.get("/workspaces/{slug}", response_model=WorkspaceOut)
def get_workspace(slug: str, session: SessionDep, principal: PrincipalDep) -> WorkspaceOut:
    return _workspace_out(workspace_for(session, principal, slug), principal.role_in(slug))


@router.put("/workspaces/{slug}/quota", response_model=WorkspaceOut)
def update_workspace_quota(
    slug: str, body: QuotaIn, session: SessionDep, principal: AdminDep
) -> WorkspaceOut:
    """Sets the token quota and the refresh cycle; a new cycle counts what the workspace used in its
    current period from the usage records (`portal.keys.set_workspace_quota_refresh`)."""
    with session.begin():
        w = workspace_for(session, principal, slug)
        # Only the workspace's row: the usage writer locks keys before workspaces, so a lock on the
        # workspace alone cannot deadlock with it. The lock keeps a batch that already charged the
        # workspace out of the gap between its charge and the recount.
        session.refresh(w, with_for_update=True)
        before = _state(w)
        w.token_quota = body.token_quota
        set_workspace_quota_refresh(session, w, body.quota_refresh)
        audit.record(
            session,
            actor=principal.username,
            action="UpdateWorkspaceQuota",
            resource_type="Workspace",
            resource_id=slug,
            workspace=slug,
            before=before,
            after=_state(w),
        )
    return _workspace_out(w, WorkspaceRole.admin)


@router.get("/workspaces/{slug}/members", response_model=list[MemberOut])
def list_members(slug: str, session: SessionDep, principal: PrincipalDep) -> list[MemberOut]:
    w = workspace_for(session, principal, slug)
    rows = session.execute(
        select(User.username, Membership.role, Membership.source)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == w.id)
        .order_by(User.username)
    ).all()
    return [MemberOut(username=u, role=r, source=s) for u, r, s in rows]


@router.put("/workspaces/{slug}/members", response_model=MemberOut)
def put_member(slug: str, body: MemberIn, session: SessionDep, principal: PrincipalDep) -> MemberOut:
    with session.begin():
        w = workspace_for(session, principal, slug, admin=True)
        user = session.scalar(select(User).where(User.username == body.username))
        if user is None:
            raise NotFound(f"user {body.username!r} not found")
        m = session.scalar(
            select(Membership).where(Membership.user_id == user.id, Membership.workspace_id == w.id)
        )
        before = {"role": m.role} if m else None
        if m is None:
            m = Membership(user_id=user.id, workspace_id=w.id, role=body.role, source="local")
            session.add(m)
        m.role = body.role
        audit.record(
            session,
            actor=principal.username,
            action="PutWorkspaceMember",
            resource_type="Membership",
            resource_id=f"{slug}/{user.username}",
            workspace=slug,
            before=before,
            after={"role": m.role},
        )
    return MemberOut(username=user.username, role=m.role, source=m.source)


@router.delete("/workspaces/{slug}/members/{username}", status_code=204)
def remove_member(slug: str, username: str, session: SessionDep, principal: PrincipalDep) -> Response:
    with session.begin():
        w = workspace_for(session, principal, slug, admin=True)
        m = session.scalar(
            select(Membership).join(User).where(User.username == username, Membership.workspace_id == w.id)
        )
        if m is None:
            raise NotFound(msg("{user!r} is not a member of {slug!r}", user=username, slug=slug))
        audit.record(
            session,
            actor=principal.username,
            action="RemoveWorkspaceMember",
            resource_type="Membership",
            resource_id=f"{slug}/{username}",
            workspace=slug,
            before={"role": m.role},
        )
        session.delete(m)
    return Response(status_code=204)


def _user_out(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        username=u.username,
        display_name=u.display_name,
        email=u.email,
        is_platform_admin=u.is_platform_admin,
        disabled=u.disabled,
    )


@router.get("/users", response_model=Page[UserOut])
def list_users(
    session: SessionDep, _: AdminDep, paging: Annotated[PageParams, Depends(page_params)]
) -> Page[UserOut]:
    total = session.scalar(select(func.count()).select_from(User)) or 0
    rows = session.scalars(
        select(User).order_by(User.username).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(items=[_user_out(u) for u in rows], total=total, page=paging.page, page_size=paging.page_size)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, session: SessionDep, principal: AdminDep) -> UserOut:
    with session.begin():
        if session.scalar(select(User).where(User.username == body.username)) is not None:
            raise Conflict(f"user {body.username!r} already exists")
        user = User(**body.model_dump(), memberships=[])
        session.add(user)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="CreateUser",
            resource_type="User",
            resource_id=user.id,
            after=body.model_dump(),
        )
    return _user_out(user)


@router.post("/users/{username}/tokens", response_model=TokenOut, status_code=201)
def create_token(
    username: str, body: TokenIn, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> TokenOut:
    """A local token for `username`: users make their own, platform admins make anyone's."""
    _may_manage(principal, username)
    with session.begin():
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"user {username!r} not found")
        secret = issue(USER_TOKEN_PREFIX)
        row = UserToken(
            public_id=secret.public_id,
            secret_hash=services.hasher.digest(secret.secret),
            user_id=user.id,
            name=body.name,
            expires_at=body.expires_at,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="CreateUserToken",
            resource_type="UserToken",
            resource_id=row.id,
            after={"user": username, "name": body.name, "token": secret.masked},
        )
    return TokenOut(id=row.id, name=row.name, token=secret.value, expires_at=row.expires_at)


def _may_manage(principal: Principal, username: str) -> None:
    if not principal.is_platform_admin and principal.username != username:
        raise NotFound(f"user {username!r} not found")
