"""The plaza's template check takes which engine serves which kind of model from the core."""

from __future__ import annotations

import pytest

from fleet.spec import ModelSource
from portal.errors import Invalid
from portal.plaza.deploy import check_serves, model_reference
from portal.serving_models import ModelSourceIn
from store.models import PlazaModel


def plaza(capabilities: list[str], **more: object) -> PlazaModel:
    return PlazaModel(id="m", capabilities=capabilities, **more)


@pytest.mark.parametrize(
    ("capabilities", "engine"),
    [
        (["image-generation"], "sglang-diffusion"),
        (["embedding"], "vllm"),
        (["rerank"], "sglang"),
        (["speech-to-text"], "vllm"),
        (["text-generation", "vision"], "mindie"),
    ],
)
def test_an_engine_of_the_models_kind_passes(capabilities: list[str], engine: str) -> None:
    check_serves(plaza(capabilities), engine)


@pytest.mark.parametrize(
    ("capabilities", "engine"),
    [(["image-generation"], "vllm"), (["embedding"], "mindie"), (["text-generation"], "sglang-diffusion")],
)
def test_another_kind_is_refused_on_the_stack_template(capabilities: list[str], engine: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_serves(plaza(capabilities), engine)
    assert caught.value.fields[0].field == "stack_template"


def test_a_non_chat_source_carries_its_capabilities_into_the_serving() -> None:
    image = plaza(["image-generation"], source_uri="hf://acme/painter", params_b=12, dtype="bfloat16")
    reference = model_reference(image)
    assert isinstance(reference, dict) and reference["capabilities"] == ["image-generation"]
    ModelSourceIn.model_validate(reference)  # the portal's serving body accepts it
    assert ModelSource.model_validate(reference).capabilities == ("image-generation",)
    chat = plaza(["text-generation"], source_uri="hf://acme/chat", params_b=7, dtype="bfloat16")
    assert "capabilities" not in model_reference(chat)  # serving files of chat models are unchanged
