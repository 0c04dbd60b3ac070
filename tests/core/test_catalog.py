"""The catalogs as data: every fact has a source, and what the issue's large models need is there."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml

from fleet import catalog
from fleet.spec import ModelCapability

LARGE = (
    "deepseek-r1",
    "deepseek-v3",
    "glm-4.5",
    "glm-4.6",
    "kimi-k2-instruct",
    "qwen3-235b-a22b",
    "qwen3-coder-480b-a35b-instruct",
)


@pytest.mark.parametrize("name", LARGE)
def test_the_large_models_are_sized_from_their_published_checkpoint(name: str) -> None:
    model = catalog.models()[name]
    assert model.moe and model.active_params_b is not None and model.active_params_b < model.params_b
    assert model.source.startswith("hf://")
    # An FP8 checkpoint says so twice: its weights and its quant_method, which the engine reads.
    assert (model.dtype == "fp8") == (model.quantization == "fp8")


def test_every_capability_family_is_a_catalog_family_with_sources() -> None:
    vendors = catalog.vendors()
    for key, cap in catalog.capabilities().items():
        vendor, family = key.split("/")
        assert family in vendors[vendor].families, key
        assert cap.sources, key
        for engine in cap.engines:
            assert engine.split("@")[0] in catalog.engines(), (key, engine)


def test_fp8_runs_on_hopper_and_not_on_ascend_a2_or_a3() -> None:
    caps = catalog.capabilities()
    assert "fp8" in caps["nvidia/hopper"].engine("vllm", "0.33.0").checkpoint
    for family in ("ascend/910b", "ascend/a3", "ascend/310p"):
        for engine in ("vllm", "sglang"):
            assert "fp8" not in caps[family].engine(engine, "0.11.0").checkpoint, (family, engine)


def test_default_images_are_only_published_tags() -> None:
    """MindIE publishes per release and hardware; a family without a published tag has no default."""
    ascend = catalog.vendors()["ascend"]
    assert ascend.default_image("mindie", "2.1.rc1", "910b") is None
    assert ascend.default_image("mindie", "2.2.rc1", "910b") == (
        "swr.cn-south-1.myhuaweicloud.com/ascendhub/mindie:2.2.RC1-800I-A2-py311-openeuler24.03-lts"
    )


def test_hami_shares_are_known_for_nvidia_ascend_and_metax() -> None:
    known = {name for name, v in catalog.vendors().items() if v.hami_shares is not None}
    assert known == {"nvidia", "ascend", "metax"}


def test_model_capabilities_use_the_plaza_and_gateway_vocabulary() -> None:
    from store.vocabulary import CAPABILITIES  # the tests may import what `fleet` may not

    assert get_args(ModelCapability) == CAPABILITIES
    for name, model in catalog.models().items():
        assert set(model.capabilities) <= set(CAPABILITIES), name


def test_catalog_models_of_plaza_ids_have_the_plazas_capabilities() -> None:
    plaza = yaml.safe_load(Path("portal/data/plaza.yaml").read_text("utf-8"))["models"]
    by_id = {m["id"]: m for m in plaza}
    for name, model in catalog.models().items():
        if name in by_id:
            assert list(model.capabilities) == by_id[name]["capabilities"], name
            assert model.params_b == by_id[name]["params_b"], name


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("qwen3-8b", "llm"),
        ("qwen2.5-vl-7b-instruct", "llm"),  # vision is a language model that also reads images
        ("bge-m3", "embedding"),
        ("bge-reranker-v2-m3", "rerank"),
        ("whisper-large-v3", "transcription"),
        ("qwen-image", "diffusion"),
    ],
)
def test_each_new_kind_has_a_sourced_catalog_model(name: str, kind: str) -> None:
    model = catalog.models()[name]
    assert model.kind == kind
    assert model.source.startswith("hf://")
    assert model.facts or name == "qwen3-8b"  # read from `source` itself


def test_a_language_model_without_an_attention_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="needs num_layers"):
        catalog.CatalogModel(display_name="x", params_b=1, dtype="bfloat16", source="hf://a/b")
    # a diffusion model needs none: it has no KV cache
    catalog.CatalogModel(
        display_name="x", params_b=1, dtype="bfloat16", source="hf://a/b", capabilities=("image-generation",)
    )
