"""`--demo`: the seed plaza, deploy templates from the demo stack, the demo workspace and user; and
that loading it again changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from portal.app import build_services, create_app
from portal.demo import load_demo, template_bodies
from portal.models import (
    AuditEvent,
    Membership,
    ModelDeployTemplate,
    PlazaModel,
    Provider,
    User,
    UserToken,
    Workspace,
)
from portal.plaza import seed
from portal.services import Services
from portal.settings import Settings

TABLES = (Provider, PlazaModel, ModelDeployTemplate, Workspace, User, Membership, UserToken, AuditEvent)


@pytest.fixture
def demo_settings(database_url: str, tmp_path: Path, admin_token: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        demo=True,
        worker_enabled=False,
    )


@pytest.fixture
def demo_services(demo_settings: Settings) -> Iterator[Services]:
    services = build_services(demo_settings)
    yield services
    services.engine.dispose()


def _counts(services: Services) -> dict[str, int]:
    with services.sessions() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def test_demo_seeds_plaza_templates_workspace_and_user(
    demo_settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    demo_services = build_services(demo_settings)
    try:
        _check_demo(demo_services, capfd.readouterr().err)
    finally:
        demo_services.engine.dispose()


def _check_demo(demo_services: Services, stderr: str) -> None:
    printed = re.findall(r"demo user token \(shown once\): (mf_\S+)", stderr)
    assert len(printed) == 1
    counts = _counts(demo_services)
    models, providers = seed.seed_catalog()
    assert (counts["providers"], counts["plaza_models"]) == (len(providers), len(models))
    with demo_services.sessions() as session:
        assert all(session.scalars(select(PlazaModel.published)))
        templates = {(t.model_id, t.name) for t in session.scalars(select(ModelDeployTemplate))}
        actors = set(session.scalars(select(AuditEvent.actor).where(AuditEvent.action != "Login")))
        actions = list(session.scalars(select(AuditEvent.action)))
    # One template per demo serving and vendor, all of which the core accepts on the demo stack.
    wanted = {(model_id, body.name) for model_id, body in template_bodies(demo_services)}
    assert templates == wanted and ("deepseek-r1", "vllm-latest-nvidia") in templates
    assert ("qwen3-8b", "vllm-cn-vendors-biren") in templates and (
        "qwen2.5-72b-instruct",
        "mindie-ascend",
    ) in templates
    assert actors == {"system"}
    assert actions.count("BatchCreateModels") == 1 and actions.count("CreateProvider") == len(providers)
    assert actions.count("AddDeployTemplates") == len({m for m, _ in templates})
    assert {"CreateWorkspace", "CreateUser", "PutWorkspaceMember", "CreateUserToken"} <= set(actions)

    with TestClient(create_app(services=demo_services)) as client:
        client.headers["Authorization"] = f"Bearer {printed[0]}"
        me = client.get("/api/me").json()
        assert me == {"username": "demo", "is_platform_admin": False, "workspaces": {"demo": "admin"}}
        plaza = client.get("/api/plaza/models", params={"page_size": 100}).json()
        assert plaza["total"] == len(models)  # published: the demo user sees them all
        assert client.get("/api/plaza/models/qwen2.5-7b-instruct").json()["templates"]
        assert client.post("/api/plaza/models/qwen3-8b:unpublish").status_code == 403


def test_loading_again_changes_nothing(
    demo_services: Services, demo_settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    before = _counts(demo_services)
    load_demo(demo_services)
    assert _counts(demo_services) == before
    restarted = build_services(demo_settings)  # a second start of the same install
    try:
        assert _counts(restarted) == before
    finally:
        restarted.engine.dispose()
    assert "demo user token" not in capfd.readouterr().err  # printed once, on the first start only


def test_what_was_deleted_comes_back(demo_services: Services) -> None:
    with demo_services.sessions() as session, session.begin():
        session.delete(session.get(PlazaModel, "phi-4"))
    load_demo(demo_services)
    with demo_services.sessions() as session:
        assert session.get(PlazaModel, "phi-4") is not None
        batches = session.scalars(select(AuditEvent).where(AuditEvent.action == "BatchCreateModels")).all()
    assert [b.after["models"] for b in batches][-1] == ["phi-4"]  # type: ignore[index]
