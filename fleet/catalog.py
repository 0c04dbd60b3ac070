"""Catalogs shipped as data: accelerator vendors, engines and models (`fleet/data/*.yaml`).

Loaded once per process and frozen; nothing here reads the stack.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


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


class Accelerator(_Data):
    family: str
    memory_gib: float


class Vendor(_Data):
    display_name: str
    resource_name: str
    hami_resource_name: str
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
    images: dict[str, dict[str, str]]
    multi_node_launcher: Literal["native", "ray"] | None = None
    quirks: tuple[Quirk, ...]
    families: dict[str, Family]
    accelerators: dict[str, Accelerator]
    sources: tuple[str, ...] = Field(min_length=1)

    def default_image(self, engine: str, version: str, family: str) -> str | None:
        image = self.images.get(engine, {}).get(version)
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
    launcher: str | None = Field(default=None, description="template asset mounted at /opt/modelfleet")
    platform_flags: tuple[str, ...] = Field(
        default=(),
        description="flags only the platform sets (with their aliases), even where a template leaves "
        "one out: the planner sized devices and memory for its values",
    )
    sources: tuple[str, ...] = ()


class CatalogModel(_Data):
    display_name: str
    params_b: float
    dtype: Literal["bfloat16", "float16", "float32", "fp8", "int8", "int4"]
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    kv_lora_rank: int | None = Field(default=None, description="MLA latent size (DeepSeek)")
    qk_rope_head_dim: int | None = None
    max_position_embeddings: int
    moe: bool = False
    source: str


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
