"""MaaS models: targets checked against the stack at HEAD, secrets only by reference, enabling needs
a target and a published plaza model, visibility per workspace, and every change audited."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from portal.bootstrap import DEMO_STACKS
from portal.services import Services
from portal.settings import Settings
from store.models import PlazaModel, Provider
from tests.portal.helpers import as_user, make_member

EXTERNAL = {
    "kind": "external",
    "base_url": "https://api.deepseek.com/v1/",
    "upstream_model": "deepseek-chat",
    "secret_ref": "env:MAAS_SECRET_DEEPSEEK",
}
SERVING = {"kind": "serving", "stack": "demo", "serving": "qwen25-7b", "region": "cn-north", "weight": 25}


@pytest.fixture
def demo_stack(services: Services) -> str:
    """The demo stack committed to the portal's stacks repository."""
    repo = services.repository
    shutil.copytree(DEMO_STACKS, repo.stacks_dir, dirs_exist_ok=True)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "demo stack")
    return "demo"


@pytest.fixture
def plaza_model(services: Services) -> str:
    with services.sessions() as session, session.begin():
        session.add(Provider(id="qwen", name="Qwen"))
        session.flush()
        session.add(PlazaModel(id="qwen2.5-7b-instruct", name="Qwen2.5 7B Instruct", provider_id="qwen"))
    return "qwen2.5-7b-instruct"


def _publish(services: Services, model: str) -> None:
    with services.sessions() as session, session.begin():
        session.execute(update(PlazaModel).where(PlazaModel.id == model).values(published=True))


def _field_error(response: Any) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    first = response.json()["error"]["fields"][0]
    return first["field"], first["message"]


def test_create_with_serving_and_external_targets(client: TestClient, demo_stack: str) -> None:
    body = {
        "public_id": "qwen/qwen2.5-7b:chat",
        "targets": [SERVING, {**EXTERNAL, "weight": 75, "priority": 1}],
        "strategy": "weighted",
        "price_input_per_m": 0.5,
        "price_output_per_m": 1.5,
        "price_cached_per_m": 0.05,
    }
    created = client.post("/api/maas-models", json=body)
    assert created.status_code == 201, created.text
    model = created.json()
    assert model["enabled"] is False and model["visibility"] == "none"  # until ops choose
    assert model["targets"][0] == {
        "kind": "serving",
        "stack": "demo",
        "serving": "qwen25-7b",
        "region": "cn-north",
        "base_url": None,
        "upstream_model": None,
        "secret_ref": None,
        "weight": 25,
        "priority": 0,
    }
    assert model["targets"][1]["base_url"] == "https://api.deepseek.com/v1"
    assert model["targets"][1]["secret_ref"] == "env:MAAS_SECRET_DEEPSEEK"
    assert client.get(f"/api/maas-models/{model['id']}").json() == model
    assert [m["public_id"] for m in client.get("/api/maas-models", params={"q": "2.5"}).json()["items"]] == [
        "qwen/qwen2.5-7b:chat"
    ]
    assert client.post("/api/maas-models", json=body).status_code == 409
    event = client.get("/api/audit", params={"action": "CreateMAASModel"}).json()["items"][0]
    assert event["resource_type"] == "MAASModel" and event["resource_id"] == "qwen/qwen2.5-7b:chat"
    assert event["after"]["targets"][1]["secret_ref"] == "env:MAAS_SECRET_DEEPSEEK"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"public_id": "-bad"}, "public_id", "up to 128 letters, digits"),
        ({"public_id": "a" * 129}, "public_id", "up to 128 letters, digits"),
        ({"targets": [{**SERVING, "stack": "nope"}]}, "targets[0].stack", "no stack 'nope'"),
        ({"targets": [{**SERVING, "serving": "nope"}]}, "targets[0].serving", "no serving 'nope'"),
        ({"targets": [{**SERVING, "region": "cn-south"}]}, "targets[0].region", "cn-east, cn-north"),
        ({"targets": [{"kind": "serving", "stack": "demo"}]}, "targets[0].serving", "required"),
        ({"targets": [{**SERVING, "upstream_model": "x"}]}, "targets[0].upstream_model", "not allowed"),
        ({"targets": [{**EXTERNAL, "upstream_model": None}]}, "targets[0].upstream_model", "required"),
        ({"targets": [{**EXTERNAL, "base_url": "ftp://host/v1"}]}, "targets[0].base_url", "URL"),
        (
            {"targets": [{**EXTERNAL, "base_url": "https://u:p@host/v1"}]},
            "targets[0].base_url",
            "credentials",
        ),
        ({"targets": [{**EXTERNAL, "base_url": "https://h/" + "a" * 2100}]}, "targets[0].base_url", "2048"),
        ({"targets": [{**EXTERNAL, "secret_ref": "sk-" + "a" * 40}]}, "targets[0].secret_ref", "raw API key"),
        ({"targets": [{**EXTERNAL, "secret_ref": "Bearer abc"}]}, "targets[0].secret_ref", "raw API key"),
        ({"targets": [{**EXTERNAL, "secret_ref": "A1b2" * 10}]}, "targets[0].secret_ref", "raw API key"),
        ({"targets": [{**EXTERNAL, "secret_ref": "vault"}]}, "targets[0].secret_ref", "env:NAME"),
        ({"targets": [{**EXTERNAL, "weight": -1}]}, "targets[0].weight", "must be at least"),
        ({"targets": [{**EXTERNAL, "kind": "lambda"}]}, "targets[0].kind", "serving"),
        (
            {"strategy": "weighted", "targets": [{**EXTERNAL, "weight": 0}, {**SERVING, "weight": 0}]},
            "targets",
            "weight above 0",
        ),
        ({"strategy": "fastest"}, "strategy", "round_robin"),
        ({"price_output_per_m": -0.1}, "price_output_per_m", "must be at least"),
        ({"plaza_model_id": "nope"}, "plaza_model_id", "no plaza model"),
        ({"visibility": "specified", "workspaces": ["ghost"]}, "workspaces[0]", "no workspace 'ghost'"),
        ({"visibility": "specified"}, "workspaces", "at least one"),
        ({"workspaces": ["team-a"]}, "workspaces", "only with visibility 'specified'"),
        ({"enabled": True}, "enabled", "at least one target"),
    ],
)
def test_invalid_bodies_name_the_field(
    client: TestClient, demo_stack: str, change: dict[str, Any], field: str, words: str
) -> None:
    client.post("/api/workspaces", json={"slug": "team-a", "name": "A"})
    body = {"public_id": "m", "targets": [], **change}
    got_field, message = _field_error(client.post("/api/maas-models", json=body))
    assert got_field == field
    assert words in message


def test_secret_references_are_accepted_and_weights_may_drain(client: TestClient, settings: Settings) -> None:
    in_dir = f"file:{settings.maas_secrets_dir}/upstream-key"
    for i, ref in enumerate(("env:MAAS_SECRET_OPENAI", in_dir, None)):
        body = {
            "public_id": f"ext-{i}",
            "strategy": "weighted",
            "targets": [{**EXTERNAL, "secret_ref": ref}, {**EXTERNAL, "weight": 0}],
        }
        assert client.post("/api/maas-models", json=body).status_code == 201


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("env:MODELFLEET_PEPPER", "the server's own settings"),
        ("env:modelfleet_database_url", "the server's own settings"),
        ("env:DATABASE_URL", "must start with MAAS_SECRET_"),
        ("file:/etc/hostname", "must be inside"),
        ("file:{secrets}/../pepper", "must be inside"),
        ("file:{secrets}/escape", "must be inside"),  # a symlink out of the directory
    ],
)
def test_secret_references_outside_the_namespace_are_refused(
    client: TestClient, settings: Settings, ref: str, words: str
) -> None:
    secrets = settings.maas_secrets_dir
    assert secrets is not None
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "escape").symlink_to(settings.data_dir / "pepper")
    body = {"public_id": "leak", "targets": [{**EXTERNAL, "secret_ref": ref.format(secrets=secrets)}]}
    field, message = _field_error(client.post("/api/maas-models", json=body))
    assert field == "targets[0].secret_ref" and words in message, message


@pytest.mark.parametrize(
    ("url", "always"),
    [
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:8000/v1", False),
        ("http://10.1.2.3/v1", False),
        ("http://[::1]:8000/v1", False),
        ("http://169.254.169.254/latest", True),  # cloud metadata: refused even when private is allowed
        ("http://0x7f.1/v1", False),
    ],
)
def test_private_upstreams_are_refused_unless_allowed(
    services: Services, admin_token: str, url: str, always: bool
) -> None:
    from portal.app import create_app

    for allowed in (False, True):
        own = replace(services, settings=services.settings.model_copy(update={"allow_private_urls": allowed}))
        with TestClient(create_app(services=own)) as c:
            c.headers["Authorization"] = f"Bearer {admin_token}"
            body = {"public_id": f"private-{allowed}", "targets": [{**EXTERNAL, "base_url": url}]}
            response = c.post("/api/maas-models", json=body)
        if allowed and not always:
            assert response.status_code == 201, response.text
        else:
            field, message = _field_error(response)
            assert field == "targets[0].base_url" and "address" in message, message


def test_enabling_needs_a_target_and_a_published_plaza_model(
    client: TestClient, services: Services, plaza_model: str
) -> None:
    created = client.post("/api/maas-models", json={"public_id": "qwen-chat", "plaza_model_id": plaza_model})
    model_id = created.json()["id"]
    status = f"/api/maas-models/{model_id}/status"
    assert _field_error(client.put(status, json={"enabled": True}))[0] == "enabled"
    update_body = {"plaza_model_id": plaza_model, "targets": [EXTERNAL]}
    assert client.put(f"/api/maas-models/{model_id}", json=update_body).status_code == 200
    field, message = _field_error(client.put(status, json={"enabled": True}))
    assert field == "enabled" and "not published" in message
    _publish(services, plaza_model)
    enabled = client.put(status, json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    # An enabled model cannot lose its last target.
    emptied = client.put(f"/api/maas-models/{model_id}", json={**update_body, "enabled": True, "targets": []})
    assert _field_error(emptied)[0] == "enabled"
    assert client.put(status, json={"enabled": False}).json()["enabled"] is False
    assert client.put("/api/maas-models/999999/status", json={"enabled": False}).status_code == 404

    events = client.get("/api/audit", params={"action": ["UpdateMAASModelStatus", "UpdateMAASModel"]}).json()
    assert [(e["action"], e["resource_type"]) for e in reversed(events["items"])] == [
        ("UpdateMAASModel", "MAASModel"),
        ("UpdateMAASModelStatus", "EnabledMAASModel"),
        ("UpdateMAASModelStatus", "EnabledMAASModel"),
    ]
    assert events["items"][0]["before"] == {"enabled": True} and events["items"][0]["after"] == {
        "enabled": False
    }


def test_update_replaces_everything_but_the_public_id(client: TestClient, demo_stack: str) -> None:
    model = client.post("/api/maas-models", json={"public_id": "m", "targets": [EXTERNAL]}).json()
    body = {"targets": [SERVING], "strategy": "least_busy", "price_input_per_m": 2, "public_id": "ignored"}
    updated = client.put(f"/api/maas-models/{model['id']}", json=body).json()
    assert updated["public_id"] == "m" and updated["strategy"] == "least_busy"
    assert [t["kind"] for t in updated["targets"]] == ["serving"] and updated["price_input_per_m"] == 2
    event = client.get("/api/audit", params={"action": "UpdateMAASModel"}).json()["items"][0]
    assert event["before"]["targets"][0]["kind"] == "external" and event["after"]["strategy"] == "least_busy"


def test_delete_is_refused_while_rules_name_the_model(client: TestClient) -> None:
    model = client.post("/api/maas-models", json={"public_id": "m", "targets": [EXTERNAL]}).json()
    rule = client.post("/api/rate-limits", json={"scope": "model", "model": "m", "unit": "rpm", "limit": 60})
    assert rule.status_code == 201, rule.text
    refused = client.delete(f"/api/maas-models/{model['id']}")
    assert refused.status_code == 409 and str(rule.json()["id"]) in refused.json()["error"]["message"]
    assert client.delete(f"/api/rate-limits/{rule.json()['id']}").status_code == 204
    assert client.delete(f"/api/maas-models/{model['id']}").status_code == 204
    assert client.get(f"/api/maas-models/{model['id']}").status_code == 404
    event = client.get("/api/audit", params={"action": "DeleteMAASModel"}).json()["items"][0]
    assert event["resource_id"] == "m" and event["before"]["targets"][0]["kind"] == "external"


def test_workspaces_list_the_enabled_models_visible_to_them(client: TestClient) -> None:
    for slug in ("team-a", "team-b"):
        client.post("/api/workspaces", json={"slug": slug, "name": slug})
    common = {"targets": [EXTERNAL], "enabled": True, "price_input_per_m": 1, "price_output_per_m": 2}
    client.post("/api/maas-models", json={"public_id": "org/everyone", **common, "visibility": "all"})
    client.post("/api/maas-models", json={"public_id": "org/unchosen", **common})  # visible to none yet
    client.post(
        "/api/maas-models",
        json={"public_id": "org/b-only", **common, "visibility": "specified", "workspaces": ["team-b"]},
    )
    client.post("/api/maas-models", json={"public_id": "org/off", **common, "enabled": False})
    alice = make_member(client, "alice", "team-a", "member")
    with as_user(client, alice):
        listed = client.get("/api/workspaces/team-a/models").json()
        assert [m["model"] for m in listed["items"]] == ["org/everyone"] and listed["total"] == 1
        assert listed["items"][0]["price_output_per_m"] == 2
        assert listed["items"][0]["base_url"].endswith("/v1")
        assert client.get("/api/workspaces/team-a/models/org/everyone").json()["model"] == "org/everyone"
        assert client.get("/api/workspaces/team-a/models/org/b-only").status_code == 404
        assert client.get("/api/workspaces/team-a/models/org/unchosen").status_code == 404
        assert client.get("/api/workspaces/team-a/models/org/off").status_code == 404
        assert client.get("/api/workspaces/team-b/models").status_code == 404
    assert [m["model"] for m in client.get("/api/workspaces/team-b/models").json()["items"]] == [
        "org/b-only",
        "org/everyone",
    ]
