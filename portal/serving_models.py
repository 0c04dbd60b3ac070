"""The serving request body the servings, preflight and preview endpoints share.

It checks the shape of a request (types, ranges, names) so a malformed body is a 422 naming the
field. Whether the serving fits the stack (known region, pool and template, capacity, flags, policy)
is the core's business: preflight reports it, the servings API refuses it. `to_serving` gives the
serving file exactly as the portal commits it, so preflight checks what would be written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portal.errors import Invalid, Unavailable
from portal.messages import msg
from portal.repository import StackRepository
from store.vocabulary import Capability

SERVING_NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Body(BaseModel):
    # Unknown keys are refused: a misspelt field must not be silently dropped from the serving file.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ModelSourceIn(_Body):
    """A model outside the catalog: where its weights are and what the planner needs to size it."""

    uri: str = Field(pattern=r"^(s3|hf|pvc)://\S+$", examples=["s3://models/acme/chat-13b"])
    params_b: float = Field(gt=0, description="parameters, in billions")
    dtype: Literal["bfloat16", "float16", "float32", "fp8", "int8", "int4"]
    num_layers: int | None = Field(None, ge=1)
    num_attention_heads: int | None = Field(None, ge=1)
    num_kv_heads: int | None = Field(None, ge=1)
    head_dim: int | None = Field(None, ge=1)
    max_position_embeddings: int | None = Field(None, ge=1)
    capabilities: list[Capability] | None = Field(
        None,
        min_length=1,
        description="what it serves (the plaza's words); decides which engines run it and how it is "
        "sized (default: text generation)",
    )


class ParallelismIn(_Body):
    tensor: int = Field(ge=1, le=256)
    pipeline: int = Field(1, ge=1, le=64)
    data: int = Field(1, ge=1, le=256)
    nodes: int | None = Field(None, ge=1, le=64, description="nodes per replica")


class PlacementIn(_Body):
    region: str = Field(min_length=1, max_length=63)
    pool: str = Field(min_length=1, max_length=63)
    replicas: int = Field(1, ge=0, le=1000)
    weight: int | None = Field(None, ge=0, le=10000, description="routing weight (default 100); 0 drains")
    parallelism: Literal["auto"] | ParallelismIn | None = Field(
        None, description="overrides the serving's parallelism on this pool"
    )


class AutoscalingIn(_Body):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    metric: Literal["waiting_requests", "running_requests", "kv_cache_usage"] = "waiting_requests"
    target: float = Field(5, gt=0)


class ServingSpecIn(_Body):
    """A model serving as a user asks for it; the stack file `<stack>/servings/<name>.yaml`."""

    name: str = Field(
        pattern=SERVING_NAME,
        min_length=2,
        max_length=63,
        description="2-63 lowercase letters, digits or '-', starting with a letter",
    )
    stack: str | None = Field(None, min_length=1, max_length=63, description="default: the portal's stack")
    model: str | ModelSourceIn = Field(description="catalog id, or an explicit source")
    template: str = Field(min_length=1, max_length=63)
    placements: list[PlacementIn] = Field(min_length=1, max_length=64)
    parallelism: Literal["auto"] | ParallelismIn | None = None
    max_model_len: int | None = Field(None, ge=128, le=10_000_000)
    quantization: Literal["fp8", "awq", "gptq", "w8a8", "w4a16", "ascend", "compressed-tensors"] | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    extra_args: list[str] = Field(default_factory=list, max_length=200)
    env: dict[Annotated[str, Field(pattern=ENV_NAME, max_length=253)], str] = Field(default_factory=dict)
    autoscaling: AutoscalingIn | None = None
    public_model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][-A-Za-z0-9._:/]*$", max_length=253)

    def to_serving(self, workspace: str) -> dict[str, Any]:
        """The serving file's content: only what was set, in the order people read it."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"stack"})
        ordered: dict[str, Any] = {
            "name": self.name,
            "workspace": workspace,
            "model": data["model"],
            "template": self.template,
        }
        for key in (
            "public_model_name",
            "max_model_len",
            "parallelism",
            "quantization",
            "dtype",
            "gpu_memory_utilization",
        ):
            if key in data:
                ordered[key] = data[key]
        if self.extra_args:
            ordered["extra_args"] = list(self.extra_args)
        if self.env:
            ordered["env"] = dict(self.env)
        if "autoscaling" in data:
            ordered["autoscaling"] = data["autoscaling"]
        ordered["placements"] = data["placements"]
        return ordered


def resolve_stack(repository: StackRepository, requested: str | None) -> str:
    """The stack a request is about: the one named, or the repository's only stack."""
    stacks = repository.stacks()
    if requested is not None:
        if requested not in stacks:
            raise Invalid.field(
                "stack",
                msg("no stack {name!r} (have: {have})", name=requested, have=", ".join(stacks) or "-"),
            )
        return requested
    if len(stacks) == 1:
        return stacks[0]
    if not stacks:
        raise Unavailable("the stacks repository holds no stack yet")
    raise Invalid.field(
        "stack", msg("the repository holds several stacks ({have}); name one", have=", ".join(stacks))
    )
