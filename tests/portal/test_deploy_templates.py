"""Deploy templates of plaza models, checked by the core against the demo stack; serving drafts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleet.rules.base import RULES
from fleet.rules.preflight import preflight
from portal.plaza.deploy import TENANCY_RULES
from portal.services import Services
from portal.serving_models import ServingSpecIn
from tests.portal.helpers import as_user, make_member
from tests.portal.plaza_support import audit_rows, create_model, install_demo_stack, provider

BASE = "/api/plaza/models"


@pytest.fixture
def demo(client: TestClient, services: Services) -> TestClient:
    install_demo_stack(services)
    provider(client)
    create_model(client, "qwen2.5-7b-instruct", published=True)
    create_model(client, "qwen2.5-72b-instruct", published=True)
    return client


def template(name: str = "vllm-nvidia", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "stack": "demo",
        "stack_template": "vllm-latest",
        "accelerator": "nvidia",
        "max_model_len": 16384,
        "extra_args": ["--max-num-batched-tokens", "8192", "--enable-chunked-prefill"],
        "env": {"VLLM_LOGGING_LEVEL": "INFO"},
    }
    body.update(fields)
    return body


def _fields(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {f["field"]: f["message"] for f in response.json()["error"]["fields"]}


def test_templates_are_saved_with_the_core_facts_and_audited(demo: TestClient, services: Services) -> None:
    created = demo.post(f"{BASE}/qwen2.5-7b-instruct/deploy-templates", json=template())
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["engine"], body["engine_version"]) == ("vllm", "0.33.0")  # from the stack template
    assert (
        body["pools"] == ["east-h100", "east-l20-shared", "local-gpu"] and len(body["checked_commit"]) == 40
    )
    assert body["extra_args"] == ["--max-num-batched-tokens", "8192", "--enable-chunked-prefill"]

    second = demo.post(
        f"{BASE}/qwen2.5-7b-instruct/deploy-templates",
        json=template("sglang-h100", stack_template="sglang", accelerator="nvidia/h100-80g", extra_args=[]),
    )
    assert second.status_code == 201, second.text
    assert second.json()["pools"] == ["east-h100"] and second.json()["engine"] == "sglang"
    again = demo.post(f"{BASE}/qwen2.5-7b-instruct/deploy-templates", json=template())
    assert again.status_code == 409

    tid = body["id"]
    replaced = demo.put(
        f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}",
        json=template(parallelism={"tensor": 2}, max_model_len=32768),
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["parallelism"] == {"tensor": 2, "pipeline": 1, "nodes": None}
    listed = demo.get(f"{BASE}/qwen2.5-7b-instruct/deploy-templates").json()
    assert [t["name"] for t in listed] == ["vllm-nvidia", "sglang-h100"]
    detail = demo.get(f"{BASE}/qwen2.5-7b-instruct").json()
    assert detail["deploy_templates"] == 2 and [t["name"] for t in detail["templates"]] == [
        "vllm-nvidia",
        "sglang-h100",
    ]

    assert (
        demo.delete(f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{second.json()['id']}").status_code == 204
    )
    assert demo.get(f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{second.json()['id']}").status_code == 404

    added = audit_rows(services, "AddDeployTemplates")
    assert [(e.resource_type, e.resource_id) for e in added] == [("Model", "qwen2.5-7b-instruct")]
    updates = audit_rows(services, "UpdateDeployTemplates")
    assert [e.detail.split()[0] for e in updates] == ["created", "updated", "deleted"]
    assert updates[1].before is not None and updates[1].after is not None
    assert (updates[1].before["max_model_len"], updates[1].after["max_model_len"]) == (16384, 32768)
    assert updates[2].before is not None and updates[2].before["template"] == "sglang-h100"


def test_each_kind_of_refusal_names_its_field(demo: TestClient) -> None:
    url = f"{BASE}/qwen2.5-7b-instruct/deploy-templates"
    typo = _fields(
        demo.post(url, json=template(extra_args=["--max-num-seqs", "64", "--enable-prefix-cachin"]))
    )
    assert list(typo) == ["extra_args[2]"]
    assert "did you mean --enable-prefix-caching?" in typo["extra_args[2]"]
    bad_value = _fields(demo.post(url, json=template(extra_args=["--max-num-seqs", "lots"])))
    assert "expects int" in bad_value["extra_args[0]"]
    platform = _fields(
        demo.post(url, json=template(extra_args=["--enable-chunked-prefill", "--max-model-len", "9"]))
    )
    assert "set by the platform" in platform["extra_args[1]"]
    stray = _fields(demo.post(url, json=template(extra_args=["8192"])))
    assert "extra_args[0]" in stray

    unknown = _fields(demo.post(url, json=template(stack_template="vllm-nightly")))
    assert "have: mindie, sglang, vllm-ascend, vllm-cn-vendors, vllm-latest" in unknown["stack_template"]
    assert "stack" in _fields(demo.post(url, json=template(stack="prod")))
    assert "engine_version" in _fields(demo.post(url, json=template(engine="vllm", engine_version="0.11.0")))
    assert "engine" in _fields(demo.post(url, json=template(engine="sglang")))
    assert "no amd pool" in _fields(demo.post(url, json=template(accelerator="amd")))["accelerator"]
    assert "unknown vendor" in _fields(demo.post(url, json=template(accelerator="acme")))["accelerator"]

    too_long = _fields(demo.post(url, json=template(max_model_len=65536)))
    assert list(too_long) == ["max_model_len"]  # every pool says so: said once, about the field
    assert "32768 positions" in too_long["max_model_len"]

    cramped = _fields(
        demo.post(f"{BASE}/qwen2.5-72b-instruct/deploy-templates", json=template(parallelism={"tensor": 1}))
    )
    assert list(cramped) == ["accelerator"]
    reasons = demo.post(
        f"{BASE}/qwen2.5-72b-instruct/deploy-templates", json=template(parallelism={"tensor": 1})
    )
    messages = [f["message"] for f in reasons.json()["error"]["fields"]]
    assert any(m.startswith("pool east-h100:") and "GiB" in m for m in messages)
    # Pools that share a reason share a message; each names what would fit it (the core's fixes differ).
    for pool in ("east-l20-shared", "local-gpu"):
        assert any(pool in m.split(":", 1)[0] and "GiB" in m for m in messages), messages
    assert demo.get(f"{BASE}/qwen2.5-72b-instruct/deploy-templates").json() == []

    create_model(demo, "mystery-13b")  # neither in the core catalog nor sized by its plaza entry
    assert "model" in _fields(demo.post(f"{BASE}/mystery-13b/deploy-templates", json=template()))


def test_a_model_outside_the_core_catalog_is_sized_from_its_plaza_facts(demo: TestClient) -> None:
    create_model(demo, "acme-13b", source_uri="s3://models/acme-13b", params_b=13, context_length=8192)
    create_model(demo, "acme-2t", source_uri="s3://models/acme-2t", params_b=2000)
    ok = demo.post(f"{BASE}/acme-13b/deploy-templates", json=template(max_model_len=8192))
    assert ok.status_code == 201, ok.text
    assert "max_model_len" in _fields(
        demo.post(f"{BASE}/acme-13b/deploy-templates", json=template("b", max_model_len=16384))
    )
    huge = demo.post(f"{BASE}/acme-2t/deploy-templates", json=template(max_model_len=None))
    messages = [f["message"] for f in huge.json()["error"]["fields"]]
    assert huge.status_code == 422 and all("does not fit" in m for m in messages), messages


def test_check_reports_per_pool_without_saving(demo: TestClient) -> None:
    url = f"{BASE}/qwen2.5-72b-instruct/deploy-templates:check"
    fits = demo.post(url, json=template(parallelism="auto")).json()
    assert fits["ok"] is True and fits["engine"] == "vllm"
    h100 = next(p for p in fits["pools"] if p["pool"] == "east-h100")
    assert h100["fits"] and h100["tensor"] == 2 and h100["required_gib"] <= h100["budget_gib"]
    cramped = demo.post(url, json=template(parallelism={"tensor": 1})).json()
    assert cramped["ok"] is False and all(p["problems"] and not p["fits"] for p in cramped["pools"])
    assert demo.get(f"{BASE}/qwen2.5-72b-instruct/deploy-templates").json() == []


def test_tenancy_policies_are_judged_at_deploy_time_not_on_the_template() -> None:
    assert set(RULES) >= TENANCY_RULES


def test_serving_draft_is_a_serving_the_core_accepts(demo: TestClient, services: Services) -> None:
    made = demo.post(f"{BASE}/qwen2.5-7b-instruct/deploy-templates", json=template(parallelism={"tensor": 2}))
    tid = made.json()["id"]
    draft = demo.get(f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}/serving-draft")
    assert draft.status_code == 200, draft.text
    body = ServingSpecIn.model_validate({k: v for k, v in draft.json().items() if v is not None})
    assert (body.model, body.template, body.stack, body.public_model_name) == (
        "qwen2.5-7b-instruct",
        "vllm-latest",
        "demo",
        "qwen2.5-7b-instruct",
    )
    assert [(p.region, p.pool, p.replicas) for p in body.placements] == [("cn-east", "east-h100", 1)]
    assert body.max_model_len == 16384 and body.env == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert body.parallelism is not None and body.parallelism != "auto" and body.parallelism.tensor == 2
    snap = services.repository.snapshot("demo")
    findings = preflight(snap.fleet, body.to_serving("demo"), snap.policy_config)
    assert not [f for f in findings if f.blocking], findings

    other = demo.get(
        f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}/serving-draft", params={"pool": "east-l20-shared"}
    ).json()
    assert other["placements"][0]["pool"] == "east-l20-shared"
    wrong = demo.get(
        f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}/serving-draft", params={"pool": "south-a3"}
    )
    assert list(_fields(wrong)) == ["pool"]
    assert demo.get(f"{BASE}/qwen2.5-72b-instruct/deploy-templates/{tid}/serving-draft").status_code == 404


def test_members_read_templates_of_published_models_only(demo: TestClient, services: Services) -> None:
    create_model(demo, "qwen3-8b")  # unpublished
    tid = demo.post(f"{BASE}/qwen2.5-7b-instruct/deploy-templates", json=template()).json()["id"]
    hidden = demo.post(f"{BASE}/qwen3-8b/deploy-templates", json=template(max_model_len=8192))
    assert hidden.status_code == 201, hidden.text
    demo.post("/api/workspaces", json={"slug": "team", "name": "Team"})
    bob = make_member(demo, "bob", "team", "admin")  # a workspace admin is still not ops
    with as_user(demo, bob):
        assert [t["id"] for t in demo.get(f"{BASE}/qwen2.5-7b-instruct/deploy-templates").json()] == [tid]
        assert demo.get(f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}/serving-draft").status_code == 200
        assert demo.get(f"{BASE}/qwen3-8b/deploy-templates").status_code == 404
        assert (
            demo.post(f"{BASE}/qwen2.5-7b-instruct/deploy-templates", json=template("x")).status_code == 403
        )
        assert demo.delete(f"{BASE}/qwen2.5-7b-instruct/deploy-templates/{tid}").status_code == 403

    # Deleting the model takes its templates with it.
    assert demo.delete(f"{BASE}/qwen3-8b").status_code == 409  # the demo stack serves qwen3-8b
    create_model(demo, "scratch", source_uri="hf://acme/scratch", params_b=1)
    demo.post(f"{BASE}/scratch/deploy-templates", json=template(max_model_len=None, extra_args=[]))
    assert demo.delete(f"{BASE}/scratch").status_code == 204
    assert audit_rows(services, "DeleteModel")[-1].resource_id == "scratch"


def test_a_model_no_engine_of_the_stack_serves_is_refused_on_its_stack_template(demo: TestClient) -> None:
    create_model(
        demo,
        "flux-dev",
        capabilities=["image-generation"],
        source_uri="hf://black-forest-labs/FLUX.1-dev",
        params_b=12,
        published=True,
    )
    refused = _fields(demo.post(f"{BASE}/flux-dev/deploy-templates", json=template()))
    assert list(refused) == ["stack_template"]
    assert (
        refused["stack_template"]
        == "engine vllm does not serve image-generation; 'flux-dev' needs an engine of its kind"
    )
    chinese = demo.post(
        f"{BASE}/flux-dev/deploy-templates", json=template(), headers={"Accept-Language": "zh"}
    ).json()["error"]["fields"][0]["message"]
    assert chinese.startswith("引擎 vllm 不支持 image-generation")
    create_model(
        demo,
        "bge-reranker-v2-m3",
        capabilities=["rerank"],
        source_uri="hf://BAAI/bge-reranker-v2-m3",
        params_b=0.6,
        published=True,
    )
    assert demo.post(f"{BASE}/bge-reranker-v2-m3/deploy-templates", json=template()).status_code == 201
