"""Model plaza: providers, models, publication, who sees what, filters and search, deletion guards,
API examples."""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from portal.plaza.examples import api_examples
from portal.services import Services
from store.db import transaction
from store.models import MaasModel
from tests.portal.helpers import as_user, make_member
from tests.portal.plaza_support import audit_rows, create_model, install_demo_stack, model_body, provider


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["items"]]


def _member(client: TestClient) -> str:
    client.post("/api/workspaces", json={"slug": "team", "name": "Team"})
    return make_member(client, "bob", "team", "member")


# -------------------------------------------------------------------------------------- providers


def test_providers_crud_is_audited_and_delete_waits_for_models(
    client: TestClient, services: Services
) -> None:
    made = provider(client, "acme", "Acme")
    assert made["models"] == 0
    assert client.post("/api/plaza/providers", json={"id": "acme", "name": "Again"}).status_code == 409
    bad = client.post("/api/plaza/providers", json={"id": "Acme Corp", "name": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "id"

    patched = client.patch("/api/plaza/providers/acme", json={"description": "Makers of everything"})
    assert patched.status_code == 200 and patched.json()["description"] == "Makers of everything"
    assert patched.json()["name"] == "Acme"
    update = audit_rows(services, "UpdateProvider")[-1]
    assert update.before is not None and update.after is not None
    assert (update.before["description"], update.after["description"]) == ("", "Makers of everything")

    create_model(client, "alpha", published=True)
    create_model(client, "draft")
    assert client.get("/api/plaza/providers/acme").json()["models"] == 2
    refused = client.delete("/api/plaza/providers/acme")
    assert refused.status_code == 409 and "alpha" in refused.json()["error"]["message"]

    bob = _member(client)
    with as_user(client, bob):
        listed = client.get("/api/plaza/providers").json()
        assert [(p["id"], p["models"]) for p in listed["items"]] == [("acme", 1)]  # only the published one
        assert client.post("/api/plaza/providers", json={"id": "x", "name": "x"}).status_code == 403
        assert client.delete("/api/plaza/providers/acme").status_code == 403

    for model_id in ("alpha", "draft"):
        assert client.delete(f"/api/plaza/models/{model_id}").status_code == 204
    assert client.delete("/api/plaza/providers/acme").status_code == 204
    assert client.get("/api/plaza/providers/acme").status_code == 404
    assert [e.resource_id for e in audit_rows(services, "CreateProvider")] == ["acme"]
    deleted = audit_rows(services, "DeleteProvider")
    assert [e.resource_type for e in deleted] == ["ModelProvider"] and deleted[0].before["name"] == "Acme"  # type: ignore[index]


# ----------------------------------------------------------------------------------------- models


def test_create_validates_each_field_by_name(client: TestClient) -> None:
    provider(client)
    cases: list[tuple[dict[str, Any], str]] = [
        (model_body("Qwen2.5-7B"), "id"),
        (model_body("-leading-dash"), "id"),
        (model_body("ok", capabilities=["telepathy"]), "capabilities[0]"),
        (model_body("ok", capabilities=[]), "capabilities"),
        (model_body("ok", source_uri="ftp://host/weights"), "source_uri"),
        (model_body("ok", icon="http://example.com/icon.png"), "icon"),
        (model_body("ok", dtype="fp4"), "dtype"),
        (model_body("ok", params_b=0), "params_b"),
        (model_body("ok", tags=["a|b"]), "tags[0]"),
        (model_body("ok", colour="blue"), "colour"),
    ]
    for body, field in cases:
        response = client.post("/api/plaza/models", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in [f["field"] for f in response.json()["error"]["fields"]], (field, response.text)

    unknown = client.post("/api/plaza/models", json=model_body("ok", provider="nobody"))
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0]["field"] == "provider"

    too_big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 41_000).decode()
    icon = client.post("/api/plaza/models", json=model_body("ok", icon=too_big))
    assert icon.status_code == 422 and "40 KB" in icon.json()["error"]["fields"][0]["message"]
    small = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 2_000).decode()
    created = create_model(
        client, "qwen2.5-7b-instruct", icon=small, source_uri="hf://Qwen/Qwen2.5-7B-Instruct"
    )
    assert created["icon"] == small and created["published"] is False

    assert client.post("/api/plaza/models", json=model_body("qwen2.5-7b-instruct")).status_code == 409
    same_name = client.post("/api/plaza/models", json=model_body("other", name="QWEN2.5-7B-INSTRUCT"))
    assert same_name.status_code == 409 and "qwen2.5-7b-instruct" in same_name.json()["error"]["message"]


def test_update_changes_only_given_fields_and_records_before_and_after(
    client: TestClient, services: Services
) -> None:
    provider(client)
    provider(client, "zeta", "Zeta")
    create_model(client, "alpha", tags=["chat"], context_length=4096, published=True)
    create_model(client, "bravo")

    patched = client.patch(
        "/api/plaza/models/alpha",
        json={"name": "Alpha One", "tags": ["chat", "hot"], "provider": "zeta", "context_length": None},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["tags"], body["provider"]["id"], body["context_length"]) == (
        "Alpha One",
        ["chat", "hot"],
        "zeta",
        None,
    )
    assert body["published"] is True and body["capabilities"] == ["text-generation"]
    row = audit_rows(services, "UpdateModel")[-1]
    assert row.before is not None and row.after is not None
    assert (row.before["name"], row.after["name"]) == ("ALPHA", "Alpha One")
    assert (row.before["provider"], row.after["provider"]) == ("acme", "zeta")

    assert client.patch("/api/plaza/models/alpha", json={"name": "BRAVO"}).status_code == 409
    cleared = client.patch("/api/plaza/models/alpha", json={"capabilities": None})
    assert cleared.status_code == 422 and cleared.json()["error"]["fields"][0]["field"] == "capabilities"
    assert client.patch("/api/plaza/models/alpha", json={"provider": "nobody"}).status_code == 422
    assert client.patch("/api/plaza/models/alpha", json={"id": "renamed"}).status_code == 422
    assert client.patch("/api/plaza/models/missing", json={"name": "x"}).status_code == 404
    # the search index follows the edit
    assert _ids(client.get("/api/plaza/models", params={"q": "alpha one"})) == ["alpha"]


def test_publication_decides_who_sees_a_model(client: TestClient, services: Services) -> None:
    provider(client)
    create_model(client, "alpha", published=True)
    create_model(client, "draft", readme="# Draft\nnot yet")
    bob = _member(client)
    with as_user(client, bob):
        assert _ids(client.get("/api/plaza/models")) == ["alpha"]
        assert client.get("/api/plaza/models/draft").status_code == 404
        assert _ids(client.get("/api/plaza/models", params={"published": "false"})) == [
            "alpha"
        ]  # admins only
        assert client.post("/api/plaza/models/draft:publish").status_code == 403
        assert client.post("/api/plaza/models", json=model_body("mine")).status_code == 403
        assert client.patch("/api/plaza/models/alpha", json={"name": "Mine"}).status_code == 403
        assert client.delete("/api/plaza/models/alpha").status_code == 403
        assert (
            client.post("/api/plaza/models:batch_create", json={"models": [model_body("x")]}).status_code
            == 403
        )

    published = client.post("/api/plaza/models/draft:publish")
    assert published.status_code == 200 and published.json()["published"] is True
    assert client.post("/api/plaza/models/draft:publish").status_code == 200  # already: no second event
    with as_user(client, bob):
        detail = client.get("/api/plaza/models/draft").json()
        assert detail["readme"] == "# Draft\nnot yet"
        assert sorted(_ids(client.get("/api/plaza/models"))) == ["alpha", "draft"]

    assert client.post("/api/plaza/models/draft:unpublish").json()["published"] is False
    with as_user(client, bob):
        assert client.get("/api/plaza/models/draft").status_code == 404
    assert client.get("/api/plaza/models/draft").json()["readme"] == "# Draft\nnot yet"  # kept for admins
    assert [e.resource_id for e in audit_rows(services, "PublishModel")] == ["draft"]
    assert [e.after for e in audit_rows(services, "UnPublishModel")] == [{"published": False}]


@pytest.fixture
def known_set(client: TestClient) -> None:
    provider(client, "acme", "Acme")
    provider(client, "zeta", "Zeta")
    models: list[dict[str, Any]] = [
        model_body(
            "alpha",
            capabilities=["text-generation", "tools"],
            tags=["chat", "Hot"],
            params_b=7,
            description="A friendly assistant",
            published=True,
        ),
        model_body("bravo", capabilities=["embedding"], tags=["retrieval"], params_b=0.5, published=True),
        model_body(
            "charlie",
            provider="zeta",
            capabilities=["text-generation", "vision"],
            tags=["chat", "multimodal"],
            params_b=70,
            description="Sees images",
            published=True,
        ),
        model_body("delta", provider="zeta", capabilities=["rerank"], tags=["retrieval", "hot"]),
        model_body("echo", tags=["chat", "hot"], params_b=32, description="100% open", published=True),
    ]
    for body in models:
        assert client.post("/api/plaza/models", json=body).status_code == 201


@pytest.mark.usefixtures("known_set")
def test_filters_search_sort_and_paging(client: TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        return _ids(client.get("/api/plaza/models", params={"sort": "name", **params}))

    assert ids() == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert ids(published="false") == ["delta"]
    assert ids(published="true") == ["alpha", "bravo", "charlie", "echo"]
    assert ids(provider="zeta") == ["charlie", "delta"]
    assert ids(provider=["acme", "zeta"]) == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert ids(capability=["embedding", "rerank"]) == ["bravo", "delta"]  # any of them
    assert ids(capability="vision") == ["charlie"]
    assert ids(tag=["chat", "hot"]) == ["alpha", "echo"]  # all of them, case-insensitively
    assert ids(tag=["retrieval", "HOT"]) == ["delta"]
    assert ids(tag="ho") == []  # tags match whole
    assert ids(q="FRIENDLY") == ["alpha"]
    assert ids(q="images") == ["charlie"]
    assert ids(q="hot") == ["alpha", "delta", "echo"]  # tags are searched too
    assert ids(q="%") == ["echo"]  # LIKE wildcards are literal
    assert ids(q="_") == []
    assert ids(provider="acme", tag="chat", q="o") == ["alpha", "echo"]
    assert ids(sort="-name") == ["echo", "delta", "charlie", "bravo", "alpha"]
    assert ids(sort="params") == ["bravo", "alpha", "echo", "charlie", "delta"]  # unknown size last
    assert ids(sort="-params") == ["charlie", "echo", "alpha", "bravo", "delta"]
    assert client.get("/api/plaza/models", params={"capability": "telepathy"}).status_code == 422
    assert client.get("/api/plaza/models", params={"sort": "size"}).status_code == 422

    pages = [
        client.get("/api/plaza/models", params={"sort": "name", "page_size": 2, "page": n}).json()
        for n in (1, 2, 3)
    ]
    assert [[m["id"] for m in p["items"]] for p in pages] == [
        ["alpha", "bravo"],
        ["charlie", "delta"],
        ["echo"],
    ]
    assert {p["total"] for p in pages} == {5}

    bob = _member(client)
    with as_user(client, bob):
        assert ids(tag="retrieval") == ["bravo"]  # delta is unpublished
        assert client.get("/api/plaza/models", params={"page_size": 2}).json()["total"] == 4
        facets = client.get("/api/plaza/facets").json()
    assert [(f["value"], f["count"]) for f in facets["providers"]] == [("acme", 3), ("zeta", 1)]
    assert ("rerank", 1) not in [(f["value"], f["count"]) for f in facets["capabilities"]]
    assert [(f["value"], f["label"], f["count"]) for f in facets["tags"] if f["value"] == "hot"] == [
        ("hot", "Hot", 2)
    ]


# --------------------------------------------------------------------------------------- deletion


def test_delete_is_refused_while_a_serving_or_maas_model_uses_it(
    client: TestClient, services: Services
) -> None:
    install_demo_stack(services)
    provider(client)
    create_model(client, "qwen3-8b")  # the demo stack serves it twice
    create_model(client, "custom-13b", source_uri="s3://models/custom-13b", params_b=13)
    create_model(client, "unused")

    refused = client.delete("/api/plaza/models/qwen3-8b")
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert "demo/qwen3-8b-biren" in message and "demo/qwen3-8b-shared" in message

    with transaction(services.sessions) as session:
        session.add(MaasModel(public_id="custom", plaza_model_id="custom-13b"))
    refused = client.delete("/api/plaza/models/custom-13b")
    assert refused.status_code == 409 and "MaaS model custom" in refused.json()["error"]["message"]

    assert client.delete("/api/plaza/models/unused").status_code == 204
    assert client.get("/api/plaza/models/unused").status_code == 404
    assert client.delete("/api/plaza/models/unused").status_code == 404
    deleted = audit_rows(services, "DeleteModel")
    assert [e.resource_id for e in deleted] == ["unused"] and deleted[0].before["name"] == "UNUSED"  # type: ignore[index]


def test_a_serving_with_an_explicit_source_counts_as_a_use(client: TestClient, services: Services) -> None:
    install_demo_stack(services)
    repo = services.repository
    serving = repo.serving_file("demo", "acme-13b")
    serving.write_text(
        "name: acme-13b\nworkspace: demo\ntemplate: vllm-latest\n"
        "model: {uri: s3://models/acme-13b, params_b: 13, dtype: bfloat16}\n"
        "placements: [{region: cn-east, pool: east-h100, replicas: 1}]\n"
    )
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "acme")
    provider(client)
    create_model(client, "acme-13b-chat", source_uri="s3://models/acme-13b", params_b=13)
    refused = client.delete("/api/plaza/models/acme-13b-chat")
    assert refused.status_code == 409 and "demo/acme-13b" in refused.json()["error"]["message"]


# --------------------------------------------------------------------------------------- examples


def _curl_json(curl: str) -> Any:
    args = shlex.split(curl.replace("\\\n", " "))
    return json.loads(args[args.index("-d") + 1])


def test_detail_has_examples_that_parse_against_the_gateway(client: TestClient) -> None:
    provider(client)
    create_model(client, "qwen3-8b", readme="# Qwen3-8B")
    create_model(client, "bge-m3", capabilities=["embedding"])
    detail = client.get("/api/plaza/models/qwen3-8b").json()
    assert detail["readme"] == "# Qwen3-8B" and detail["sized_by"] == "catalog" and detail["templates"] == []
    examples = detail["examples"]
    assert examples["base_url"] == "http://127.0.0.1:8000/v1"  # the gateway_base_url setting
    assert "http://127.0.0.1:8000/v1/chat/completions" in examples["curl"]
    assert _curl_json(examples["curl"])["model"] == "qwen3-8b"
    compile(examples["python"], "example.py", "exec")
    assert 'model="qwen3-8b"' in examples["python"] and "chat.completions.create" in examples["python"]
    assert 'model: "qwen3-8b"' in examples["node"]

    embedding = client.get("/api/plaza/models/bge-m3").json()
    assert embedding["sized_by"] == "catalog"  # the core sizes BGE-M3 as an embedding model
    assert "/v1/embeddings" in embedding["examples"]["curl"]
    body = _curl_json(embedding["examples"]["curl"])
    assert body["model"] == "bge-m3" and len(body["input"]) == 1
    assert "embeddings.create" in embedding["examples"]["python"]


@pytest.mark.parametrize(
    "capabilities",
    [
        ["text-generation"],
        ["text-generation", "vision"],
        ["embedding"],
        ["rerank"],
        ["image-generation"],
        ["speech-to-text"],
        ["text-to-speech"],
        ["image-editing"],
    ],
)
def test_every_example_kind_is_valid_code(capabilities: list[str], tmp_path: Path) -> None:
    examples = api_examples("https://llm.example.com/", "it's-a.model_1", capabilities)
    assert examples.base_url == "https://llm.example.com/v1"
    if capabilities in (["speech-to-text"], ["image-editing"]):  # an upload: multipart fields, not JSON
        args = shlex.split(examples.curl.replace("\\\n", " "))
        assert "model=it's-a.model_1" in args and args[1].endswith(
            ("/v1/audio/transcriptions", "/v1/images/edits")
        )
    else:
        assert _curl_json(examples.curl)["model"] == "it's-a.model_1"  # a quote survives the shell
    compile(examples.python, "example.py", "exec")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "example.mjs"
    script.write_text(examples.node)
    checked = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
