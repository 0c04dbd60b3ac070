"""Demo data for `python -m portal --demo`: the seed plaza (published), deploy templates for the
models the demo stack serves, a workspace `demo` and a user `demo` who administers it, and the
gateway's MaaS models (served by the engine simulator) with a demo API key.

Idempotent: every start adds only what is missing, so a restart changes nothing and a deleted
object comes back. Everything it creates is audited with the actor "system".
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import audit
from portal.api.deploy_templates import create_template
from portal.errors import PortalError
from portal.plaza import seed
from portal.plaza.schemas import DeployTemplateIn
from portal.services import Services
from store.db import transaction
from store.models import (
    Membership,
    ModelDeployTemplate,
    PlazaModel,
    User,
    UserToken,
    Workspace,
    WorkspaceRole,
)
from store.security import USER_TOKEN_PREFIX, issue

log = logging.getLogger("modelfleet.portal")
ACTOR = "system"
DEMO_STACK = "demo"
DEMO_WORKSPACE = "demo"
DEMO_USER = "demo"
DEMO_TOKEN = "demo"


def load_demo(services: Services) -> None:
    with transaction(services.sessions) as session:
        result = seed.load_seed(session, ACTOR, publish=True)
    if result.created:
        log.info("demo: added %d plaza models", len(result.created))
    _deploy_templates(services)
    _workspace_and_user(services)
    # The gateway's part: MaaS models for the stack's public model names, answered by the engine
    # simulator, and a demo API key printed once (portal/demo_maas.py).
    from portal.demo_maas import seed_demo_gateway

    seed_demo_gateway(services)


def template_bodies(services: Services) -> list[tuple[str, DeployTemplateIn]]:
    """(model id, template) for every serving of the demo stack and accelerator vendor it runs on:
    the stack's own servings are the deploy recipes ops already trust."""
    repo = services.repository
    if DEMO_STACK not in repo.stacks():
        return []
    fleet = repo.snapshot(DEMO_STACK).fleet
    out: list[tuple[str, DeployTemplateIn]] = []
    for s in fleet.servings:
        if not isinstance(s.model, str):
            continue
        vendors = dict.fromkeys(fleet.pools[p.pool].spec.vendor for p in s.placements)
        for vendor in vendors:
            body: dict[str, Any] = {
                "name": f"{s.template}-{vendor}",
                "description": f"As the demo stack serves it ({s.name})",
                "stack": DEMO_STACK,
                "stack_template": s.template,
                "accelerator": vendor,
                "parallelism": s.parallelism
                if s.parallelism == "auto"
                else {
                    "tensor": s.parallelism.tensor,
                    "pipeline": s.parallelism.pipeline,
                    "nodes": s.parallelism.nodes,
                },
                "max_model_len": s.max_model_len,
                "extra_args": list(s.extra_args),
                "env": dict(s.env),
                "gpu_memory_utilization": s.gpu_memory_utilization,
                "quantization": s.quantization,
            }
            out.append((s.model, DeployTemplateIn.model_validate(body)))
    return out


def _deploy_templates(services: Services) -> None:
    for model_id, body in template_bodies(services):
        with transaction(services.sessions) as session:
            model = session.get(PlazaModel, model_id)
            if model is None or _has_template(session, model_id, body.name):
                continue
            try:  # the core checks before anything is written, so a refusal leaves nothing behind
                create_template(session, services, ACTOR, model, body)
            except PortalError as exc:  # the core refuses it (e.g. a policy): the demo goes on
                log.warning("demo: deploy template %s of %s not added: %s", body.name, model_id, exc.message)


def _has_template(session: Session, model_id: str, name: str) -> bool:
    query = select(ModelDeployTemplate.id).where(
        ModelDeployTemplate.model_id == model_id, ModelDeployTemplate.name == name
    )
    return session.scalar(query) is not None


def _workspace_and_user(services: Services) -> None:
    with transaction(services.sessions) as session:
        workspace = session.scalar(select(Workspace).where(Workspace.slug == DEMO_WORKSPACE))
        if workspace is None:
            workspace = Workspace(slug=DEMO_WORKSPACE, name="Demo")
            session.add(workspace)
            session.flush()
            audit.record(
                session,
                actor=ACTOR,
                action="CreateWorkspace",
                resource_type="Workspace",
                resource_id=workspace.slug,
                workspace=workspace.slug,
                after={
                    "slug": workspace.slug,
                    "name": workspace.name,
                    "token_quota": None,
                    "quota_refresh": "month",
                },
            )
        user = session.scalar(select(User).where(User.username == DEMO_USER))
        if user is None:
            user = User(username=DEMO_USER, display_name="Demo user", memberships=[])
            session.add(user)
            session.flush()
            audit.record(
                session,
                actor=ACTOR,
                action="CreateUser",
                resource_type="User",
                resource_id=user.id,
                after={"username": DEMO_USER, "is_platform_admin": False},
            )
        membership = session.scalar(
            select(Membership).where(Membership.user_id == user.id, Membership.workspace_id == workspace.id)
        )
        if membership is None:
            session.add(Membership(user_id=user.id, workspace_id=workspace.id, role=WorkspaceRole.admin))
            audit.record(
                session,
                actor=ACTOR,
                action="PutWorkspaceMember",
                resource_type="Membership",
                resource_id=f"{DEMO_WORKSPACE}/{DEMO_USER}",
                workspace=DEMO_WORKSPACE,
                after={"role": WorkspaceRole.admin},
            )
        has_token = session.scalar(
            select(UserToken.id).where(UserToken.user_id == user.id, UserToken.name == DEMO_TOKEN)
        )
        if has_token is None:
            token = issue(USER_TOKEN_PREFIX)
            row = UserToken(
                public_id=token.public_id,
                secret_hash=services.hasher.digest(token.secret),
                user_id=user.id,
                name=DEMO_TOKEN,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                actor=ACTOR,
                action="CreateUserToken",
                resource_type="UserToken",
                resource_id=row.id,
                after={"user": DEMO_USER, "name": DEMO_TOKEN, "token": token.masked},
            )
            # Printed once, like the bootstrap admin's: only its hash is kept.
            print(f"modelfleet: demo user token (shown once): {token.value}", file=sys.stderr, flush=True)
