"""A whole stack, validated: every object on its own, then every cross-reference between them.

`build_fleet` takes plain data (what the YAML files hold) and returns a `Fleet` or raises one
`SpecError` listing every problem, each with its YAML path, so ops fix a stack in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fleet import capability, catalog, secrets, serves, sources, validation
from fleet.errors import Issue, SpecError
from fleet.gcpause import collector_paused
from fleet.kinds import Kind, kind_of
from fleet.spec import (
    DeployTemplate,
    GpuNodePool,
    ModelFiles,
    ModelServing,
    ModelSource,
    Platform,
    Region,
)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class PoolFacts:
    """A node pool with the catalog's defaults filled in."""

    spec: GpuNodePool
    vendor: catalog.Vendor
    family: str
    memory_per_device_gib: float
    resource_name: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the planner and the renderer need to know about the model a serving runs."""

    id: str
    params_b: float
    dtype: str
    quantization: str | None  # the checkpoint's format (quant_method); None for 16-bit weights
    uri: str
    num_layers: int | None
    num_attention_heads: int | None
    kv_bytes_per_token: int | None
    max_position_embeddings: int | None
    moe: bool
    kind: Kind = "llm"  # fleet.kinds: how it is sized and which engines serve it
    capabilities: tuple[str, ...] = ("text-generation",)


@dataclass(frozen=True)
class Fleet:
    stack: str
    platform: Platform
    regions: dict[str, Region]
    pools: dict[str, PoolFacts]
    templates: dict[str, DeployTemplate]
    servings: tuple[ModelServing, ...]
    models: dict[str, ModelFacts] = field(default_factory=dict)  # by serving name
    model_files: tuple[ModelFiles, ...] = ()  # copies into cluster regions' stores, by Job


def _validate(model: type[M], raw: Any, path: str, issues: list[Issue]) -> M | None:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        issues += validation.issues_from(exc, model, path)
        return None


def _named(model: type[M], items: Any, section: str, issues: list[Issue]) -> list[tuple[str, M]]:
    """Validate a list of named objects; paths use names (`pools[h100]`), not indexes."""
    if items is None:
        return []
    if not isinstance(items, list):
        issues.append(Issue(section, f"must be a list, got {type(items).__name__}"))
        return []
    out: list[tuple[str, M]] = []
    seen: set[str] = set()
    for index, raw in enumerate(items):
        name = raw.get("name") if isinstance(raw, dict) else None
        path = f"{section}[{name}]" if isinstance(name, str) and name else f"{section}[{index}]"
        if isinstance(name, str) and name in seen:
            issues.append(Issue(f"{path}.name", f"duplicate name {name!r}"))
            continue
        if isinstance(name, str):
            seen.add(name)
        obj = _validate(model, raw, path, issues)
        if obj is not None:
            out.append((path, obj))
    return out


def _pool_facts(path: str, pool: GpuNodePool, issues: list[Issue]) -> PoolFacts | None:
    vendor = catalog.vendors().get(pool.vendor)
    if vendor is None:
        known = ", ".join(sorted(catalog.vendors()))
        issues.append(Issue(f"{path}.accelerator", f"unknown vendor {pool.vendor!r} (known: {known})"))
        return None
    accel = vendor.accelerators.get(pool.model)
    family = pool.family or (accel.family if accel else None)
    memory = pool.memory_per_device_gib or (accel.memory_gib if accel else None)
    if family is None or memory is None:
        issues.append(
            Issue(
                f"{path}.accelerator",
                f"{pool.accelerator!r} is not in the {vendor.display_name} catalog "
                f"(known: {', '.join(sorted(vendor.accelerators))}); set family and "
                "memory_per_device_gib",
            )
        )
        return None
    if family not in vendor.families:
        known = ", ".join(sorted(vendor.families))
        issues.append(Issue(f"{path}.family", f"unknown {pool.vendor} family {family!r} ({known})"))
        return None
    if vendor.families[family].even_devices and pool.devices_per_node % 2:
        issues.append(
            Issue(
                f"{path}.devices_per_node",
                f"{family} devices are allocated in pairs; use an even count",
            )
        )
    whole_device = vendor.families[family].resource_name or vendor.resource_name
    default_resource = vendor.hami_resource_name if pool.sharing == "hami" else whole_device
    return PoolFacts(pool, vendor, family, memory, pool.resource_name or default_resource)


def _kv_bytes_per_token(m: catalog.CatalogModel) -> int | None:
    # KV cache is kept in 16-bit unless asked otherwise; MLA keeps one latent vector per layer.
    if m.kind != "llm" or m.num_layers is None:
        return None  # not sized by a KV cache (fleet.kinds)
    if m.kv_lora_rank is not None:
        return m.num_layers * (m.kv_lora_rank + (m.qk_rope_head_dim or 0)) * 2
    if m.num_kv_heads is None or m.head_dim is None:
        return None
    return 2 * m.num_layers * m.num_kv_heads * m.head_dim * 2


def source_id(uri: str) -> str:
    """The folder name a source's weights get under the model path: its last path part, without
    the revision, lower-case (`hf://Qwen/Qwen3-8B@main` -> `qwen3-8b`)."""
    return uri.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()


def model_facts(serving: ModelServing, path: str, issues: list[Issue]) -> ModelFacts | None:
    model = serving.model
    if isinstance(model, ModelSource):
        kv = None
        kind = kind_of(model.capabilities)
        if kind == "llm" and model.num_layers and model.num_kv_heads and model.head_dim:
            kv = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2
        return ModelFacts(
            id=source_id(model.uri),
            params_b=model.params_b,
            dtype=model.dtype,
            quantization=model.checkpoint_quantization,
            uri=model.uri,
            num_layers=model.num_layers,
            num_attention_heads=model.num_attention_heads,
            kv_bytes_per_token=kv,
            max_position_embeddings=model.max_position_embeddings,
            moe=False,
            kind=kind,
            capabilities=model.capabilities,
        )
    if model not in catalog.models():
        hint = ", ".join(sorted(catalog.models()))
        issues.append(Issue(f"{path}.model", f"unknown model {model!r}; catalog has: {hint}"))
        return None
    return _catalog_facts(model)


@cache  # only catalog names reach it: a bounded cache
def _catalog_facts(model: str) -> ModelFacts:
    """A catalog model's facts: the catalog is loaded once per process, so every serving of the
    model shares one (frozen) copy."""
    entry = catalog.models()[model]
    return ModelFacts(
        id=model,
        params_b=entry.params_b,
        dtype=entry.dtype,
        quantization=entry.quantization or ("fp8" if entry.dtype == "fp8" else None),
        uri=entry.source,
        num_layers=entry.num_layers,
        num_attention_heads=entry.num_attention_heads,
        kv_bytes_per_token=_kv_bytes_per_token(entry),
        max_position_embeddings=entry.max_position_embeddings,
        moe=entry.moe,
        kind=entry.kind,
        capabilities=entry.capabilities,
    )


def _declared(items: Any) -> set[str]:
    """Names written in a section, valid or not: an object that failed validation has its own error
    already, so references to it are not reported again as unknown."""
    if not isinstance(items, list):
        return set()
    return {raw["name"] for raw in items if isinstance(raw, dict) and isinstance(raw.get("name"), str)}


def _check_serving(
    path: str, s: ModelServing, fleet: Fleet, declared: dict[str, set[str]], issues: list[Issue]
) -> ModelFacts | None:
    if s.template not in fleet.templates and s.template not in declared["templates"]:
        issues.append(Issue(f"{path}.template", f"unknown deploy template {s.template!r}"))
    if s.env or s.extra_args:
        issues += secrets.serving_issues(s, path)
    model = model_facts(s, path, issues)
    template = fleet.templates.get(s.template)
    if model is not None and template is not None:
        issues += serves.check(model, s, template, path)
    seen_pools: set[str] = set()
    for i, p in enumerate(s.placements):
        at = f"{path}.placements[{i}]"
        if p.region not in fleet.regions and p.region not in declared["regions"]:
            issues.append(Issue(f"{at}.region", f"unknown region {p.region!r}"))
        pool = fleet.pools.get(p.pool)
        if pool is None and p.pool not in declared["pools"]:
            issues.append(Issue(f"{at}.pool", f"unknown pool {p.pool!r}"))
        elif pool is not None and pool.spec.region != p.region:
            issues.append(
                Issue(
                    f"{at}.pool",
                    f"pool {p.pool!r} is in region {pool.spec.region!r}, not {p.region!r}",
                )
            )
        if p.pool in seen_pools:
            issues.append(Issue(f"{at}.pool", f"pool {p.pool!r} is placed twice; raise replicas instead"))
        seen_pools.add(p.pool)
        if len(f"{s.name}-{p.pool}") > 63:
            issues.append(
                Issue(at, f"object name '{s.name}-{p.pool}' is over 63 characters; shorten the names")
            )
        if s.autoscaling and not s.autoscaling.min_replicas <= p.replicas <= s.autoscaling.max_replicas:
            issues.append(
                Issue(
                    f"{at}.replicas",
                    f"{p.replicas} is outside autoscaling bounds "
                    f"[{s.autoscaling.min_replicas}, {s.autoscaling.max_replicas}]",
                )
            )
        region = fleet.regions.get(p.region)
        if s.autoscaling and region is not None and not region.controllers.keda:
            issues.append(Issue(f"{path}.autoscaling", f"region {p.region!r} has no KEDA (controllers.keda)"))
        if s.autoscaling and region is not None and region.prometheus_url is None:
            issues.append(
                Issue(f"{path}.autoscaling", f"region {p.region!r} sets no prometheus_url to scale on")
            )
        plain = (
            s.quantization is None and s.dtype in (None, "auto") and (model is None or not model.quantization)
        )
        # A diffusion serving's quantization and dtype are refused as such by `serves.check`.
        if model is not None and model.kind == "diffusion":
            plain = True
        if not plain and model and template and pool and pool.spec.region == p.region:
            issues += capability.check(model, s, template, pool, path, fleet.pools)
        if region is not None and template is not None and isinstance(s.model, ModelSource):
            issues += sources.check(s, template, region, path)
    return model


def check_serving(fleet: Fleet, path: str, raw: Any) -> tuple[ModelServing, ModelFacts]:
    """One serving against an already-built fleet's regions, pools and templates, with exactly the
    checks `build_fleet` runs on it (so checking a change costs that serving, not the stack); raises
    SpecError listing every issue, each under `path`."""
    issues: list[Issue] = []
    serving = _validate(ModelServing, raw, path, issues)
    # A built fleet holds every object its files declare (else it would not have built), so nothing
    # declared-but-invalid needs sparing from "unknown ..." reports.
    nothing: dict[str, set[str]] = {"regions": set(), "pools": set(), "templates": set()}
    model = _check_serving(path, serving, fleet, nothing, issues) if serving is not None else None
    if issues or serving is None or model is None:
        raise SpecError(dict.fromkeys(issues))
    return serving, model


def _check_files(
    path: str, files: ModelFiles, regions: Mapping[str, Region], declared: set[str], issues: list[Issue]
) -> None:
    seen: set[str] = set()
    for i, target in enumerate(files.regions):
        at = f"{path}.regions[{i}].name"
        region = regions.get(target.name)
        if target.name in seen:
            issues.append(Issue(at, f"region {target.name!r} is listed twice"))
        seen.add(target.name)
        if region is None:
            if target.name not in declared:
                issues.append(Issue(at, f"unknown region {target.name!r}"))
        elif region.runtime != "kubernetes":
            issues.append(
                Issue(
                    at,
                    f"region {target.name!r} runs no Jobs ({region.runtime} runtime): "
                    "the portal copies its files itself",
                )
            )


def _model_files(
    items: Iterable[tuple[str, Any]], regions: Mapping[str, Region], declared: set[str], issues: list[Issue]
) -> tuple[ModelFiles, ...]:
    valid: list[ModelFiles] = []
    names: dict[str, str] = {}
    ids: dict[int, str] = {}
    for path, raw in items:
        files = _validate(ModelFiles, raw, path, issues)
        if files is None:
            continue
        if files.name in names:
            issues.append(
                Issue(f"{path}.name", f"duplicate model files {files.name!r} (also {names[files.name]})")
            )
            continue
        if files.id in ids:
            issues.append(Issue(f"{path}.id", f"request {files.id} is also {ids[files.id]}"))
            continue
        names[files.name], ids[files.id] = path, path
        _check_files(path, files, regions, declared, issues)
        valid.append(files)
    return tuple(valid)


@collector_paused
def build_fleet(
    stack: str,
    config: Mapping[str, Any],
    servings: Iterable[tuple[str, Any]],
    model_files: Iterable[tuple[str, Any]] = (),
) -> Fleet:
    """Validate a stack. `config` holds `platform`, `regions`, `pools`, `templates`; each item of
    `servings` is (path, raw serving), of `model_files` (path, raw model files)."""
    issues: list[Issue] = []
    declared = {section: _declared(config.get(section)) for section in ("regions", "pools", "templates")}
    platform = _validate(Platform, config.get("platform", {}), "platform", issues) or Platform()
    regions = {r.name: r for _, r in _named(Region, config.get("regions"), "regions", issues)}
    pools: dict[str, PoolFacts] = {}
    for path, pool in _named(GpuNodePool, config.get("pools"), "pools", issues):
        if pool.region not in regions and pool.region not in declared["regions"]:
            issues.append(Issue(f"{path}.region", f"unknown region {pool.region!r}"))
        facts = _pool_facts(path, pool, issues)
        if facts is not None:
            pools[pool.name] = facts
    templates: dict[str, DeployTemplate] = {}
    for path, t in _named(DeployTemplate, config.get("templates"), "templates", issues):
        issues += secrets.template_issues(t, path)
        templates[t.name] = t
    if not regions and not any(i.path.startswith("regions") for i in issues):
        issues.append(Issue("regions", "a stack needs at least one region"))
    gateway_regions = platform.gateway.regions if platform.gateway and platform.gateway.regions else ()
    for i, name in enumerate(gateway_regions):
        if name not in regions and name not in declared["regions"]:
            issues.append(Issue(f"platform.gateway.regions[{i}]", f"unknown region {name!r}"))

    fleet = Fleet(stack, platform, regions, pools, templates, ())
    valid: list[ModelServing] = []
    names: dict[str, str] = {}
    for path, raw in servings:
        s = _validate(ModelServing, raw, path, issues)
        if s is None:
            continue
        if s.name in names:
            issues.append(Issue(f"{path}.name", f"duplicate serving {s.name!r} (also {names[s.name]})"))
            continue
        names[s.name] = path
        model = _check_serving(path, s, fleet, declared, issues)
        if model is not None:
            fleet.models[s.name] = model
        valid.append(s)
    files = _model_files(model_files, regions, declared["regions"], issues)
    if issues:
        raise SpecError(dict.fromkeys(issues))  # one region's missing KEDA is said once, not per placement
    return Fleet(stack, platform, regions, pools, templates, tuple(valid), fleet.models, files)
