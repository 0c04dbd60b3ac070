"""`--demo`: the seed plaza, deploy templates from the demo stack, the demo workspace and user; and
that loading it again changes nothing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from portal import cli
from portal.app import build_services, create_app
from portal.demo import load_demo, template_bodies
from portal.plaza import seed
from portal.services import Services
from portal.settings import Settings
from store.models import (
    AuditEvent,
    Membership,
    ModelDeployTemplate,
    PlazaModel,
    Provider,
    User,
    UserToken,
    Workspace,
)

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
        # Published: the demo user sees them all, and the model-files demo's stand-in (portal/files/demo.py).
        assert plaza["total"] == len(models) + 1
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


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8123"),
        ("0.0.0.0", "http://127.0.0.1:8123"),  # every interface: this machine reaches it on loopback
        ("::", "http://[::1]:8123"),
        ("fd00::5", "http://[fd00::5]:8123"),
        ("portal.internal", "http://portal.internal:8123"),
    ],
)
def test_the_gateway_url_is_where_the_portal_listens(
    host: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELFLEET_GATEWAY_BASE_URL", raising=False)
    assert cli.serve_settings(host, 8123).gateway_base_url == url
    monkeypatch.setenv("MODELFLEET_GATEWAY_BASE_URL", "https://llm.example.com")  # a proxy in front
    assert cli.serve_settings(host, 8123).gateway_base_url == "https://llm.example.com"


def test_python_m_portal_demo_prints_the_gateway_url_of_its_own_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("MODELFLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELFLEET_LOCAL_RUNTIME_ENABLED", "false")  # no engine processes outliving it
    served: dict[str, Any] = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    result = CliRunner().invoke(
        cli.app, ["--demo", "--host", "0.0.0.0", "--port", "8123", "--data-dir", str(tmp_path / "var")]
    )
    assert result.exit_code == 0, result.output
    app: FastAPI = served["app"]
    try:
        assert (served["host"], served["port"]) == ("0.0.0.0", 8123)
        assert "OpenAI-compatible endpoint http://127.0.0.1:8123/v1 " in result.stderr
        assert 'OpenAI(base_url="http://127.0.0.1:8123/v1"' in result.stderr
        token = re.findall(r"demo user token \(shown once\): (mf_\S+)", result.stderr)[0]
        with TestClient(app) as client:  # what the portal tells users is the same endpoint
            client.headers["Authorization"] = f"Bearer {token}"
            models = client.get("/api/workspaces/demo/models").json()["items"]
        assert models and {m["base_url"] for m in models} == {"http://127.0.0.1:8123/v1"}
    finally:
        app.state.services.engine.dispose()
