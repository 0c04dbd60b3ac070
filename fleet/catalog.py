"""Catalogs shipped as data: accelerator vendors, engines and models (`fleet/data/*.yaml`).

Loaded once per process and frozen; nothing here reads the stack.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.kinds import Kind, kind_of
from fleet.spec import ModelCapability, Quantization


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostMount(_Data):
    name: str
    path: str
    type: Literal["Directory", "File"]


class Toleration(_Data):
    key: str
    operator: Literal["Exists", "Equal"]
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    value: str | None = None


class QuirkCondition(_Data):
    family: str | None = None
    sharing: Literal["none", "hami"] | None = None
    min_tensor_parallel: int | None = None


class Quirk(_Data):
    """Arguments a vendor forces on an engine, and when."""

    engine: str
    when: QuirkCondition
    args: tuple[str, ...]
    why: str


class Family(_Data):
    image_suffix: dict[str, str] = {}
    even_devices: bool = False
    resource_name: str | None = Field(
        default=None, description="whole-device resource when the family's differs from the vendor's"
    )


class HamiShares(_Data):
    """HAMi's per-device memory and core resources for a vendor. `{resource}` stands for the pool's
    device resource (Ascend names them per model: huawei.com/Ascend910B3-memory)."""

    memory_resource: str
    memory_unit: Literal["MiB", "GiB"]
    cores_resource: str | None = None
    cores_annotations: dict[str, str] = Field(
        default={}, description="pod annotations without which the cores share is ignored"
    )
    sources: tuple[str, ...] = Field(min_length=1)


class Accelerator(_Data):
    family: str
    memory_gib: float


class Vendor(_Data):
    display_name: str
    resource_name: str
    hami_resource_name: str
    hami_shares: HamiShares | None = Field(
        default=None, description="HAMi memory/cores resources; None where they are not known"
    )
    visible_devices_env: str
    device_nodes: tuple[str, ...]
    host_mounts: tuple[HostMount, ...]
    runtime_class: str | None
    supplemental_groups: tuple[int, ...]
    env: dict[str, str]
    multi_node_env: dict[str, str]
    ray_env: dict[str, str]
    field_env: dict[str, str]
    tolerations: tuple[Toleration, ...]
    images: dict[str, dict[str, str | dict[str, str]]]  # engine -> version -> image (or per family)
    multi_node_launcher: Literal["native", "ray"] | None = None
    quirks: tuple[Quirk, ...]
    families: dict[str, Family]
    accelerators: dict[str, Accelerator]
    sources: tuple[str, ...] = Field(min_length=1)

    def default_image(self, engine: str, version: str, family: str) -> str | None:
        image = self.images.get(engine, {}).get(version)
        if isinstance(image, dict):  # published per family: no suffix, no default for the others
            return image.get(family)
        if image is None:
            return None
        suffix = self.families[family].image_suffix.get(engine, "") if family in self.families else ""
        return image + suffix


class Engine(_Data):
    """How an engine is launched and observed (the flag schema is separate, per version)."""

    display_name: str
    entrypoint: tuple[str, ...]
    model_flag: str | None = Field(description="flag carrying the model path; None = positional")
    default_port: int
    rendezvous_port: int = 29500
    health_path: str | None
    metrics: dict[str, str] = {}
    multi_node: tuple[Literal["native", "ray"], ...] = ()
    tensor_across_nodes: bool = Field(
        default=False, description="tensor parallel may span nodes (a multiple of the devices per node)"
    )
    auto_multi_node: Literal["pipeline", "tensor"] = Field(
        default="pipeline", description="how parallelism: auto splits a replica over nodes"
    )
    launcher: str | None = Field(default=None, description="template asset mounted at /opt/modelfleet")
    platform_flags: tuple[str, ...] = Field(
        default=(),
        description="flags only the platform sets (with their aliases), even where a template leaves "
        "one out: the planner sized devices and memory for its values",
    )
    serves: tuple[Kind, ...] = Field(
        default=("llm",), description="the kinds of model it runs (fleet.kinds); custom: any"
    )
    sources: tuple[str, ...] = ()


class EngineSupport(_Data):
    """What one engine runs on one accelerator family (fleet/data/capabilities.yaml)."""

    checkpoint: tuple[Quantization, ...] = ()
    online: tuple[Quantization, ...] = ()
    flags: dict[str, str] = {}  # method -> the engine's --quantization value


class Capability(_Data):
    """What an accelerator family can compute in and load, per engine (and engine version)."""

    dtypes: tuple[Literal["bfloat16", "float16", "float32"], ...]
    engines: dict[str, EngineSupport]
    sources: tuple[str, ...] = Field(min_length=1)

    def engine(self, engine: str, version: str) -> EngineSupport:
        """The pinned version's entry (`vllm@0.11.0`), else the engine's, else nothing quantized."""
        return self.engines.get(f"{engine}@{version}") or self.engines.get(engine) or EngineSupport()


class CatalogModel(_Data):
    display_name: str
    params_b: float
    active_params_b: float | None = Field(default=None, description="parameters used per token (MoE)")
    dtype: Literal["bfloat16", "float16", "float32", "fp8", "int8", "int4"]
    quantization: Quantization | None = Field(
        default=None, description="the published checkpoint's quant_method (config.json)"
    )
    capabilities: tuple[ModelCapability, ...] = Field(
        default=("text-generation",), min_length=1, description="what it serves (plaza vocabulary)"
    )
    # The attention shape sizes a language model's KV cache; other kinds are sized without it.
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = Field(default=None, description="MLA latent size (DeepSeek)")
    qk_rope_head_dim: int | None = None
    max_position_embeddings: int | None = None
    moe: bool = False
    source: str
    facts: str | None = Field(default=None, description="where the shape was read, when not `source`")

    @property
    def kind(self) -> Kind:
        return kind_of(self.capabilities)

    @model_validator(mode="after")
    def _llm_has_a_shape(self) -> CatalogModel:
        shape = (self.num_layers, self.num_attention_heads, self.num_kv_heads, self.head_dim)
        if self.kind == "llm" and (None in shape or self.max_position_embeddings is None):
            raise ValueError(
                "a language model needs num_layers, num_attention_heads, num_kv_heads, head_dim and "
                "max_position_embeddings (its KV cache is sized from them)"
            )
        return self


def _load(name: str) -> Any:
    return yaml.safe_load(resources.files("fleet").joinpath("data", name).read_text("utf-8"))


@cache
def vendors() -> dict[str, Vendor]:
    return {k: Vendor.model_validate(v) for k, v in _load("vendors.yaml")["vendors"].items()}


@cache
def engines() -> dict[str, Engine]:
    return {k: Engine.model_validate(v) for k, v in _load("engines.yaml")["engines"].items()}


@cache
def models() -> dict[str, CatalogModel]:
    return {k: CatalogModel.model_validate(v) for k, v in _load("models.yaml")["models"].items()}


@cache
def capabilities() -> dict[str, Capability]:
    """`vendor/family` -> what it runs; families not listed run 16-bit checkpoints only."""
    raw = _load("capabilities.yaml")["families"]
    return {k: Capability.model_validate(v) for k, v in raw.items()}
