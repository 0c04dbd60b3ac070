"""Request and response shapes of the plaza, and the field rules they enforce.

The same `ModelIn` checks a model typed into the admin form, one imported from an index, and one
from the seed catalog, so all three paths accept exactly the same models.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from store.vocabulary import CAPABILITIES, Capability, Dtype

MODEL_ID = r"^[a-z0-9][a-z0-9._-]{0,127}$"
MODEL_ID_HELP = "lower-case letters, digits, '.', '_' or '-', up to 128, e.g. qwen2.5-7b-instruct"
PROVIDER_ID = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SOURCE_URI = r"^(hf|s3|pvc)://\S+$"
TEMPLATE_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ACCELERATOR = r"^[a-z0-9]+(/[a-z0-9][-a-z0-9.]*)?$"

Quantization = Literal["fp8", "awq", "gptq", "w8a8", "w4a16", "ascend", "compressed-tensors"]
SortKey = Literal["name", "-name", "created", "-created", "params", "-params"]

ICON_MAX_BYTES = 40 * 1024  # the source product's limit for uploaded icons
ICON_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/webp")
_DATA_URI = re.compile(r"^data:(?P<type>[-+.\w/]+);base64,(?P<data>[A-Za-z0-9+/=\s]*)$")
_HTTPS_URL = re.compile(r"^https://[^\s/?#]+[^\s]*$")


def check_icon(value: str | None) -> str | None:
    """An icon is an https URL, or a small image inlined as a base64 data: URI (< 40 KB decoded)."""
    if value is None or value == "":
        return None
    if value.startswith("data:"):
        match = _DATA_URI.match(value)
        if match is None or match["type"] not in ICON_TYPES:
            raise ValueError(f"a data: icon must be data:<{'|'.join(ICON_TYPES)}>;base64,<data>")
        try:
            size = len(base64.b64decode(match["data"], validate=False))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the data: icon is not valid base64") from exc
        if size >= ICON_MAX_BYTES:
            raise ValueError(f"the icon is {size} bytes; inline icons must be under 40 KB")
        return value
    if len(value) > 2048 or not _HTTPS_URL.match(value):
        raise ValueError("must be an https:// URL or a data:image/...;base64 URI")
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Tag = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[^|\n\r]+$")]


class _Body(BaseModel):
    # Unknown keys are refused: a misspelt field must not be silently dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -------------------------------------------------------------------------------------- providers


class ProviderIn(_Body):
    id: str = Field(pattern=PROVIDER_ID, max_length=63, description="lower-case, e.g. the HF org: qwen")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    icon: str | None = Field(None, description="https:// URL or data:image/...;base64 URI under 40 KB")

    _icon = field_validator("icon")(check_icon)


class ProviderPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    icon: str | None = None

    _icon = field_validator("icon")(check_icon)


class ProviderOut(BaseModel):
    id: str
    name: str
    description: str
    icon: str | None
    models: int = Field(description="plaza models of this provider the caller can see")
    created_at: datetime
    updated_at: datetime


class ProviderRef(BaseModel):
    id: str
    name: str
    icon: str | None


# ----------------------------------------------------------------------------------------- models


class ModelFields(_Body):
    """What a plaza model says about itself; every field but `id` can change later."""

    name: str = Field(min_length=1, max_length=200, description="display name, unique")
    provider: str = Field(pattern=PROVIDER_ID, max_length=63, description="provider id")
    capabilities: list[Capability] = Field(min_length=1, max_length=len(CAPABILITIES))
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    context_length: int | None = Field(None, ge=1, le=100_000_000, description="tokens")
    params_b: float | None = Field(None, gt=0, le=100_000, description="parameters, in billions")
    dtype: Dtype = Field("bfloat16", description="weights' precision, as the planner sizes them")
    description: str = Field("", max_length=4000)
    readme: str = Field("", max_length=200_000, description="Markdown, shown on the detail page")
    icon: str | None = Field(None, description="https:// URL or data:image/...;base64 URI under 40 KB")
    source_uri: str | None = Field(None, pattern=SOURCE_URI, max_length=2048, examples=["hf://Qwen/Qwen3-8B"])
    license: str | None = Field(None, max_length=100)

    _icon = field_validator("icon")(check_icon)

    @field_validator("capabilities", "tags")
    @classmethod
    def _dedupe(cls, values: list[str]) -> list[str]:
        return _unique(values)


class ModelIn(ModelFields):
    id: str = Field(pattern=MODEL_ID, max_length=128, description=MODEL_ID_HELP)
    published: bool = Field(False, description="visible to every signed-in user")


class ModelPatch(_Body):
    """Only the fields present change; `null` clears an optional field."""

    name: str | None = Field(None, min_length=1, max_length=200)
    provider: str | None = Field(None, pattern=PROVIDER_ID, max_length=63)
    capabilities: list[Capability] | None = Field(None, min_length=1, max_length=len(CAPABILITIES))
    tags: list[Tag] | None = Field(None, max_length=20)
    context_length: int | None = Field(None, ge=1, le=100_000_000)
    params_b: float | None = Field(None, gt=0, le=100_000)
    dtype: Dtype | None = None
    description: str | None = Field(None, max_length=4000)
    readme: str | None = Field(None, max_length=200_000)
    icon: str | None = None
    source_uri: str | None = Field(None, pattern=SOURCE_URI, max_length=2048)
    license: str | None = Field(None, max_length=100)

    _icon = field_validator("icon")(check_icon)

    @field_validator("capabilities", "tags")
    @classmethod
    def _dedupe(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _unique(values)


# Fields a patch may not set to null (the others clear).
REQUIRED_FIELDS = frozenset({"name", "provider", "capabilities", "tags", "dtype", "description", "readme"})


class ModelOut(BaseModel):
    id: str
    name: str
    provider: ProviderRef
    capabilities: list[str]
    tags: list[str]
    context_length: int | None
    params_b: float | None
    dtype: str
    description: str
    icon: str | None
    source_uri: str | None
    license: str | None
    published: bool
    deploy_templates: int = Field(description="how many deploy templates the model has")
    created_at: datetime
    updated_at: datetime


class ApiExamples(BaseModel):
    base_url: str = Field(description="the gateway's OpenAI-compatible base URL")
    curl: str
    python: str = Field(description="Python, with the `openai` package (>= 1.0)")
    node: str = Field(description="Node.js (ES module), with the `openai` package (>= 4)")


# ------------------------------------------------------------------------------- deploy templates


class ParallelismIn(_Body):
    tensor: int = Field(ge=1, le=256)
    pipeline: int = Field(1, ge=1, le=64)
    nodes: int | None = Field(None, ge=1, le=64, description="nodes per replica; derived when unset")


class DeployTemplateIn(_Body):
    """How to run this model with one of a stack's templates on one accelerator vendor."""

    name: str = Field(pattern=TEMPLATE_NAME, max_length=63, description="unique per model, e.g. vllm-nvidia")
    description: str = Field("", max_length=800)
    stack: str = Field(min_length=1, max_length=63)
    stack_template: str = Field(
        min_length=1, max_length=63, description="a deploy template of the stack: engine, version, image"
    )
    accelerator: str = Field(
        pattern=ACCELERATOR, max_length=63, description="vendor id (nvidia, ascend, …) or vendor/model"
    )
    engine: str | None = Field(None, max_length=16, description="if set, must be the stack template's")
    engine_version: str | None = Field(
        None, max_length=32, description="if set, must be the stack template's"
    )
    parallelism: Literal["auto"] | ParallelismIn = "auto"
    max_model_len: int | None = Field(None, ge=128, le=10_000_000)
    extra_args: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=200, description="engine arguments, one token per item"
    )
    env: dict[
        Annotated[str, Field(pattern=ENV_NAME, max_length=253)], Annotated[str, Field(max_length=8192)]
    ] = Field(default_factory=dict, max_length=100)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    quantization: Quantization | None = None

    def spec(self) -> dict[str, Any]:
        """What the template stores besides its identity (the `spec` column)."""
        data = self.model_dump(
            mode="json",
            include={
                "parallelism",
                "max_model_len",
                "extra_args",
                "env",
                "gpu_memory_utilization",
                "quantization",
            },
        )
        return data


class PoolCheck(BaseModel):
    """What the core says about running the model on one pool of the accelerator."""

    pool: str
    region: str
    accelerator: str
    fits: bool
    tensor: int | None = None
    pipeline: int | None = None
    nodes: int | None = None
    devices_per_replica: int | None = None
    required_gib: float | None = None
    budget_gib: float | None = None
    problems: list[str] = Field(default_factory=list, description="mandatory findings: why it cannot run")
    advisories: list[str] = Field(default_factory=list)


class TemplateCheck(BaseModel):
    ok: bool = Field(description="at least one pool fits")
    stack: str
    commit: str
    engine: str
    engine_version: str
    pools: list[PoolCheck]


class DeployTemplateOut(BaseModel):
    id: int
    model_id: str
    name: str
    description: str
    stack: str
    stack_template: str
    accelerator: str
    engine: str
    engine_version: str
    parallelism: Literal["auto"] | ParallelismIn
    max_model_len: int | None
    extra_args: list[str]
    env: dict[str, str]
    gpu_memory_utilization: float | None
    quantization: str | None
    pools: list[str] = Field(description="pools the model fitted on when the template was saved")
    checked_commit: str = Field(description="stack commit the template was checked against")
    created_at: datetime
    updated_at: datetime


class ModelDetail(ModelOut):
    readme: str
    sized_by: Literal["catalog", "source", "unknown"] = Field(
        description="how the planner sizes the model: the core's catalog entry, or params_b and dtype "
        "with source_uri; unknown means deploy templates cannot be checked yet"
    )
    templates: list[DeployTemplateOut]
    examples: ApiExamples


# ------------------------------------------------------------------------------------------ import


class FieldProblem(BaseModel):
    field: str
    message: str


class ParseIn(_Body):
    url: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL of a YAML or JSON index",
        examples=["https://…/index.yaml"],
    )
    content: str | None = Field(None, max_length=5 * 1024 * 1024, description="the index itself, inline")


class ParsedModel(BaseModel):
    index: int = Field(description="position in the index, from 0")
    format: Literal["modelfleet", "modelspec"]
    model: dict[str, Any] | None = Field(description="the model as it would be created")
    provider: ProviderIn | None = Field(description="the provider it would create, if missing")
    exists: bool = Field(description="already in the plaza: batch_create skips it")
    error: str | None = Field(description="why it cannot be imported; null when it can")
    fields: list[FieldProblem] = Field(default_factory=list)


class ParseOut(BaseModel):
    models: list[ParsedModel]
    providers: list[ProviderIn] = Field(description="providers the index describes")
    importable: int
    warnings: list[str] = Field(default_factory=list, description="parts of the index that were ignored")


class BatchCreateIn(_Body):
    models: list[ModelIn] = Field(min_length=1, max_length=1000)
    providers: list[ProviderIn] = Field(
        default_factory=list, max_length=1000, description="details for providers that do not exist yet"
    )
    duplicate_policy: Literal["skip"] = Field("skip", description="models that exist already are skipped")


class Skipped(BaseModel):
    id: str
    reason: str


class BatchCreateOut(BaseModel):
    created: list[str]
    skipped: list[Skipped]
    providers_created: list[str]


class FacetCount(BaseModel):
    value: str
    label: str
    count: int


class Facets(BaseModel):
    """What the filters can offer, counted over the models the caller can see."""

    providers: list[FacetCount]
    capabilities: list[FacetCount]
    tags: list[FacetCount]
