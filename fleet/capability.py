"""What the hardware runs: a serving's checkpoint, quantization and dtype against its pool's family.

The facts are data (`fleet/data/capabilities.yaml`, with sources); the rules (docs/ops-guide.md,
"What the hardware runs"):

- the checkpoint's format (a catalog model's `quantization`, a source's `quantization`, fp8 weights)
  must be one the engine loads on the pool's accelerator family;
- a serving's `quantization` is the checkpoint's own (nothing to do), or, on a 16-bit checkpoint, a
  method the engine applies on the fly on that family; never another format: vLLM refuses a
  `--quantization` that differs from the checkpoint's `quant_method`, and no engine turns bf16 weights
  into AWQ or GPTQ at load time;
- a serving's `dtype` is one the family computes in.

`--quantization` is rendered only where the engine needs it (ModelSlim on Ascend, SGLang's INT8) or
for an on-the-fly method; otherwise the engine reads the format from the checkpoint's config.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fleet import catalog
from fleet.errors import Issue
from fleet.spec import DeployTemplate, ModelServing

if TYPE_CHECKING:  # fleet.stack calls `check` while it builds these
    from fleet.stack import ModelFacts, PoolFacts

SIXTEEN_BIT = ("bfloat16", "float16", "float32")


def of(pool: PoolFacts) -> catalog.Capability | None:
    """The pool's family's capabilities; None when the catalog knows none (16-bit only)."""
    return catalog.capabilities().get(f"{pool.spec.vendor}/{pool.family}")


def support(pool: PoolFacts, t: DeployTemplate) -> catalog.EngineSupport:
    cap = of(pool)
    return cap.engine(t.engine, t.engine_version) if cap is not None else catalog.EngineSupport()


def online_method(model: ModelFacts, s: ModelServing) -> str | None:
    """The method the engine applies at load time: the serving's, when the checkpoint has none."""
    return s.quantization if model.quantization is None else None


def weights_precision(model: ModelFacts, s: ModelServing) -> tuple[str, bool]:
    """(what the weights are held in on the device, whether that is a quantization format)."""
    method = online_method(model, s) or model.quantization
    return (method, True) if method else (model.dtype, False)


def quantization_flag(model: ModelFacts, s: ModelServing, pool: PoolFacts, t: DeployTemplate) -> str | None:
    """The `--quantization` value to render, if any (see the module docstring)."""
    if t.engine == "custom":
        return s.quantization
    online = online_method(model, s)
    if online is not None:
        return support(pool, t).flags.get(online, online)
    # A 16-bit checkpoint served as it is (most servings) needs no look-up at all.
    return support(pool, t).flags.get(model.quantization) if model.quantization else None


def _where(pool: PoolFacts, t: DeployTemplate) -> str:
    engine = catalog.engines()[t.engine].display_name
    return f"{engine} {t.engine_version} on {pool.vendor.display_name} {pool.family} (pool {pool.name})"


def _listed(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(items) if items else "none"


def check(
    model: ModelFacts,
    s: ModelServing,
    t: DeployTemplate,
    pool: PoolFacts,
    path: str,
    pools: Mapping[str, PoolFacts],
) -> list[Issue]:
    """Everything the pool's hardware cannot run about this serving; the region's other `pools` are
    named as the fix when one of them can."""
    if t.engine == "custom":
        return []
    engine = support(pool, t)
    where = _where(pool, t)
    issues: list[Issue] = []
    if model.quantization is not None and model.quantization not in engine.checkpoint:
        others = [p for p in pools.values() if p.spec.region == pool.spec.region and p is not pool]
        better = [p.name for p in others if model.quantization in support(p, t).checkpoint]
        elsewhere = f", or place it on pool {' or '.join(better)}" if better else ""
        loads = (
            f"it loads {_listed(engine.checkpoint)} checkpoints and 16-bit ones"
            if engine.checkpoint
            else "it loads 16-bit checkpoints only"
        )
        issues.append(
            Issue(
                f"{path}.model",
                f"{model.id}'s checkpoint is quantized as {model.quantization} ({model.dtype} weights), "
                f"which {where} cannot load ({loads}); point model at a checkpoint it loads "
                f"(model: {{uri: ..., dtype: ..., quantization: ...}}){elsewhere}",
            )
        )
    elif s.quantization is not None and s.quantization != model.quantization:
        if model.quantization is not None:
            issues.append(
                Issue(
                    f"{path}.quantization",
                    f"{model.id} is already a {model.quantization} checkpoint; the engine reads its format "
                    f"from config.json and refuses another --quantization: remove quantization (or set "
                    f"it to {model.quantization})",
                )
            )
        elif s.quantization not in engine.online:
            online = f"; on the fly it applies: {_listed(engine.online)}" if engine.online else ""
            kind = "cannot quantize to it on the fly" if s.quantization == "fp8" else "needs a checkpoint"
            issues.append(
                Issue(
                    f"{path}.quantization",
                    f"{s.quantization} {kind}: {model.id} holds {model.dtype} weights and {where} does "
                    f"not apply {s.quantization} at load time{online}; point model at a {s.quantization} "
                    f"checkpoint (model: {{uri: ..., quantization: {s.quantization}}}) or remove "
                    "quantization",
                )
            )
    cap = of(pool)
    if s.dtype not in (None, "auto") and cap is not None and s.dtype not in cap.dtypes:
        issues.append(
            Issue(
                f"{path}.dtype",
                f"{pool.vendor.display_name} {pool.family} (pool {pool.name}) computes in "
                f"{_listed(list(cap.dtypes))} only; set dtype to one of them or auto",
            )
        )
    return issues
