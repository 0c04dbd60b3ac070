"""The catalogs as data: every fact has a source, and what the issue's large models need is there."""

from __future__ import annotations

import pytest

from fleet import catalog

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
