"""Importing plaza models from an index URL (ours and the source product's ModelSpec), served by a
real HTTP server; and the seed catalog, which is such an index."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer

from fleet import catalog
from portal.plaza import seed
from portal.plaza.importer import MAX_INDEX_BYTES
from portal.services import Services
from tests.portal.plaza_support import audit_rows, create_model, model_body, provider

OURS = {
    "providers": [
        {"id": "qwen", "name": "Qwen", "description": "Alibaba Cloud's Qwen team"},
        {"id": "Bad Provider", "name": "x"},
    ],
    "models": [
        model_body(
            "qwen3-8b", name="Qwen3-8B", provider="qwen", params_b=8.19, source_uri="hf://Qwen/Qwen3-8B"
        ),
        model_body("existing", provider="acme"),
        model_body("broken", capabilities=["telepathy"], provider="qwen"),
        model_body("newco-7b", provider="newco"),
        model_body("qwen3-8b", name="Qwen3-8B again", provider="qwen"),
    ],
}

MODELSPEC = """\
apiVersion: model.hydra.io/v1alpha1
kind: ModelSpec
metadata:
  name: DeepSeek-R1
spec:
  config:
    maxTokens: 16384
  deployments:
  - customRuntimeArgs: []
    resourceRequirements: {cpu: 8, gpuCount: 16, gpuType: gpu, memory: 960, perGPUMemoryGB: 80}
    runtime: vllm
    versionRequired: '>=v0.6.5'
  descriptor:
    description:
      enUS: A reasoning model.
      zhCN: 推理模型。
    display: DeepSeek-R1
    icon: {src: 'https://example.com/deepseek.svg', type: image/svg}
    links:
    - {description: About, url: 'https://www.deepseek.com/'}
    provider:
      id: deepseek
      name: {enUS: DeepSeek, zhCN: 深度求索}
    tags: [TEXT_GENERATION]
  source:
    huggingface: {name: deepseek-ai/DeepSeek-R1}
---
apiVersion: model.hydra.io/v1alpha1
kind: ModelSpec
metadata:
  name: llama-3.2-11b-vision-instruct
spec:
  descriptor:
    description: {enUS: Image in, text out.}
    display: Llama-3.2-11B-Vision-Instruct
    provider: {id: meta, name: {enUS: Meta}}
    tags: [TEXT_GENERATION, IMAGE_TO_TEXT]
  source:
    huggingface: {name: meta-llama/Llama-3.2-11B-Vision-Instruct}
---
apiVersion: model.hydra.io/v1alpha1
kind: ModelSpec
metadata:
  name: odd-one
spec:
  descriptor:
    display: Odd One
    provider: {id: meta, name: {enUS: Meta}}
    tags: [TEXT_GENERATION, MIND_READING]
"""


def _parse(client: TestClient, **body: Any) -> Any:
    response = client.post("/api/plaza/models:parse", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: Any) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    field = response.json()["error"]["fields"][0]
    return field["field"], field["message"]


def test_our_format_previews_each_model_then_imports_skipping_duplicates(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    provider(client)
    create_model(client, "existing")
    httpserver.expect_request("/index.yaml").respond_with_data(
        yaml.safe_dump(OURS), content_type="application/yaml"
    )
    preview = _parse(client, url=httpserver.url_for("/index.yaml"))
    by_index = {m["index"]: m for m in preview["models"]}
    assert len(by_index) == 5
    first = by_index[0]
    assert (first["format"], first["exists"], first["error"]) == ("modelfleet", False, None)
    assert (
        first["model"]["id"] == "qwen3-8b" and first["provider"]["description"] == "Alibaba Cloud's Qwen team"
    )
    assert by_index[1]["exists"] is True and by_index[1]["error"] is None
    assert by_index[2]["fields"][0]["field"] == "capabilities[0]" and by_index[2]["model"]["id"] == "broken"
    assert by_index[3]["error"] is None and by_index[3]["provider"] is None  # created with its id as name
    assert by_index[4]["fields"][0]["field"] == "id" and "entry 0" in by_index[4]["error"]
    assert preview["importable"] == 2
    assert [p["id"] for p in preview["providers"]] == ["qwen"]
    assert preview["warnings"] and "providers[1]" in preview["warnings"][0]

    chosen = [m["model"] for m in preview["models"] if not m["exists"] and m["error"] is None]
    chosen.append(model_body("existing"))  # ticked anyway: skipped
    done = client.post(
        "/api/plaza/models:batch_create", json={"models": chosen, "providers": preview["providers"]}
    )
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["created"] == ["qwen3-8b", "newco-7b"]
    assert result["skipped"] == [{"id": "existing", "reason": "exists"}]
    assert result["providers_created"] == ["qwen", "newco"]
    assert client.get("/api/plaza/providers/qwen").json()["description"] == "Alibaba Cloud's Qwen team"
    assert client.get("/api/plaza/providers/newco").json()["name"] == "newco"
    assert client.get("/api/plaza/models/qwen3-8b").json()["published"] is False

    batch = audit_rows(services, "BatchCreateModels")
    assert (
        len(batch) == 1
        and batch[0].after is not None
        and batch[0].after["models"] == ["qwen3-8b", "newco-7b"]
    )
    assert [e.resource_id for e in audit_rows(services, "CreateProvider")] == ["acme", "qwen", "newco"]

    again = _parse(client, url=httpserver.url_for("/index.yaml"))
    assert [m["exists"] for m in again["models"]][:2] == [True, True] and again["importable"] == 0
    repeat = client.post("/api/plaza/models:batch_create", json={"models": chosen[:1]}).json()
    assert repeat == {
        "created": [],
        "skipped": [{"id": "qwen3-8b", "reason": "exists"}],
        "providers_created": [],
    }
    assert len(audit_rows(services, "BatchCreateModels")) == 1  # nothing created, nothing recorded


def test_modelspec_documents_map_onto_plaza_fields(client: TestClient, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/catalog.yaml").respond_with_data(MODELSPEC)
    preview = _parse(client, url=httpserver.url_for("/catalog.yaml"))
    r1, llama, odd = preview["models"]
    assert r1["format"] == "modelspec" and r1["error"] is None
    model = r1["model"]
    assert (model["id"], model["name"], model["provider"]) == ("deepseek-r1", "DeepSeek-R1", "deepseek")
    assert model["capabilities"] == ["text-generation"] and model["context_length"] == 16384
    assert (
        model["source_uri"] == "hf://deepseek-ai/DeepSeek-R1"
        and model["icon"] == "https://example.com/deepseek.svg"
    )
    assert (
        model["description"] == "A reasoning model."
        and "[About](https://www.deepseek.com/)" in model["readme"]
    )
    assert r1["provider"] == {"id": "deepseek", "name": "DeepSeek", "description": "", "icon": None}
    assert llama["model"]["capabilities"] == ["text-generation", "vision"]
    assert odd["error"] is not None and odd["fields"][0]["field"] == "spec.descriptor.tags[1]"

    # The same specs as a list (JSON), as a ModelSpecList and as the catalog's merged index all read alike.
    docs = list(yaml.safe_load_all(MODELSPEC))[:2]
    for name, text in {
        "/list.json": json.dumps(docs),
        "/speclist.yaml": yaml.safe_dump(
            {"apiVersion": "model.hydra.io/v1alpha1", "kind": "ModelSpecList", "items": docs}
        ),
        "/index.yaml": yaml.safe_dump(
            {"apiVersion": "v1", "entries": docs, "generated": "2025-10-31T00:00:00Z"}
        ),
    }.items():
        httpserver.expect_request(name).respond_with_data(text)
        ids = [m["model"]["id"] for m in _parse(client, url=httpserver.url_for(name))["models"]]
        assert ids == ["deepseek-r1", "llama-3.2-11b-vision-instruct"], name

    bad_id = MODELSPEC.replace("name: DeepSeek-R1", "name: 'deepseek r1!'", 1)
    broken = _parse(client, content=bad_id)["models"][0]
    assert broken["fields"][0]["field"] == "metadata.name"  # named as the author wrote it


def test_unreadable_indexes_are_422_on_url(client: TestClient, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    httpserver.expect_request("/html").respond_with_data(
        "<html><body>: : :\n  - [</body>", content_type="text/html"
    )
    httpserver.expect_request("/scalar").respond_with_data("just some words")
    httpserver.expect_request("/huge").respond_with_data("a" * (MAX_INDEX_BYTES + 1))
    httpserver.expect_request("/moved").respond_with_data("", status=302, headers={"Location": "/missing"})

    field, message = _error(
        client.post("/api/plaza/models:parse", json={"url": httpserver.url_for("/missing")})
    )
    assert field == "url" and "404" in message
    field, message = _error(
        client.post("/api/plaza/models:parse", json={"url": httpserver.url_for("/moved")})
    )
    assert field == "url" and "404" in message  # the redirect was followed, then refused
    field, message = _error(client.post("/api/plaza/models:parse", json={"url": httpserver.url_for("/html")}))
    assert field == "url" and "not YAML or JSON" in message
    field, message = _error(
        client.post("/api/plaza/models:parse", json={"url": httpserver.url_for("/scalar")})
    )
    assert field == "url" and "not a model index" in message
    field, message = _error(client.post("/api/plaza/models:parse", json={"url": httpserver.url_for("/huge")}))
    assert field == "url" and str(MAX_INDEX_BYTES) in message

    for url, says in [
        ("ftp://example.com/index.yaml", "http and https"),
        ("http://10.0.0.1/index.yaml", "name the host"),
        ("http://167772161/index.yaml", "name the host"),  # 10.0.0.1 spelled as a number
        ("not a url", "http and https"),
    ]:
        field, message = _error(client.post("/api/plaza/models:parse", json={"url": url}))
        assert field == "url" and says in message, (url, message)
    assert _error(client.post("/api/plaza/models:parse", json={}))[0] == "url"
    assert _error(client.post("/api/plaza/models:parse", json={"content": "a: [1, 2"}))[0] == "content"


def test_batch_create_validates_like_create(client: TestClient) -> None:
    bad = client.post("/api/plaza/models:batch_create", json={"models": [model_body("Bad Id")]})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "models[0].id"
    policy = client.post(
        "/api/plaza/models:batch_create", json={"models": [model_body("ok")], "duplicate_policy": "update"}
    )
    assert policy.status_code == 422


# ----------------------------------------------------------------------------------- seed catalog


def test_every_seed_entry_validates_and_agrees_with_the_core_catalog() -> None:
    models, providers = seed.seed_catalog()
    assert 15 <= len(models) <= 30
    assert {m.provider for m in models} <= {p.id for p in providers}
    assert len({m.id for m in models}) == len(models) and len({m.name for m in models}) == len(models)
    core = catalog.models()
    shared = [m for m in models if m.id in core]
    assert {m.id for m in shared} >= {
        "qwen2.5-7b-instruct",
        "qwen3-8b",
        "deepseek-r1",
        "llama-3.1-8b-instruct",
    }
    for m in shared:
        assert m.params_b == core[m.id].params_b, m.id
        assert m.source_uri == core[m.id].source, m.id
    for m in models:
        assert m.source_uri is not None and m.source_uri.startswith("hf://"), m.id
        assert m.license and m.params_b and m.description, m.id
        assert m.readme.startswith(f"# {m.name}\n"), m.id


def test_the_seed_file_imports_through_the_api(client: TestClient, services: Services) -> None:
    preview = _parse(client, content=seed.SEED_PATH.read_text("utf-8"))
    assert preview["importable"] == len(preview["models"]) == len(seed.seed_catalog()[0])
    with services.sessions() as session, session.begin():
        first = seed.load_seed(session, "system")
    with services.sessions() as session, session.begin():
        second = seed.load_seed(session, "system")
    assert len(first.created) == len(preview["models"]) and second.created == []
    listed = client.get("/api/plaza/models", params={"q": "qwen3", "sort": "name"}).json()
    assert [m["id"] for m in listed["items"]] == ["qwen3-235b-a22b", "qwen3-30b-a3b", "qwen3-32b", "qwen3-8b"]


@pytest.mark.parametrize("text", ["", "---\n", "[]"])
def test_empty_indexes_say_so(client: TestClient, text: str) -> None:
    field, _ = _error(client.post("/api/plaza/models:parse", json={"content": text}))
    assert field == "content"
