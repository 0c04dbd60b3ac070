"""How each placement runs on its pool: parallelism, devices and nodes per replica, memory fit,
and whether the pools have room for everything placed on them. Pure arithmetic, no I/O.

Memory model (documented in docs/ops-guide.md#memory-fit):
  weights  = parameters x bytes per parameter: the checkpoint's format (fleet.capability: its
             quantization, or its dtype), or the method the engine applies on the fly; +10% when
             quantized, for scales and the layers left in 16-bit
  kv cache = bytes per token (from the attention shape; MLA keeps one latent per layer) x max length,
             i.e. room for at least one full-length sequence
  overhead = 1.5 GiB per device (runtime context, activations, graph buffers)
  budget   = devices x memory per device x memory utilisation (engine default 0.9)

Only language models have a KV cache to size (fleet.kinds). Embedding, rerank, Whisper and diffusion
models are sized by weights + overhead + their kind's activation headroom (`kinds.ACTIVATION_GIB`),
with no context length; a diffusion model runs on one device per replica (SGLang Diffusion's
sequence parallelism replicates the weights, so more devices would not make it fit).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from typing import Literal, NamedTuple

from fleet import capability, catalog, kinds, sharing
from fleet.errors import Issue, PlanError
from fleet.gcpause import collector_paused
from fleet.sizing import PodSize, pod_size
from fleet.spec import DeployTemplate, ModelServing, Parallelism
from fleet.stack import Fleet, ModelFacts, PoolFacts

GIB = 1024**3
DEFAULT_MEMORY_UTILIZATION = 0.9
OVERHEAD_GIB_PER_DEVICE = 1.5
QUANTIZED_OVERHEAD = 1.10
BYTES_PER_PARAM = {
    "float32": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "w8a8": 1.0,
    "ascend": 1.0,  # ModelSlim W8A8
    "compressed-tensors": 1.0,
    "int4": 0.5,
    "awq": 0.5,
    "gptq": 0.5,
    "w4a16": 0.5,
}


@dataclass(frozen=True, slots=True)
class MemoryFit:
    weights_gib: float
    kv_cache_gib: float | None  # None when the model's attention shape is unknown
    overhead_gib: float
    budget_gib: float
    activation_gib: float = 0.0  # headroom of the kinds sized without a KV cache (fleet.kinds)

    @property
    def required_gib(self) -> float:
        return self.weights_gib + (self.kv_cache_gib or 0.0) + self.overhead_gib + self.activation_gib

    @property
    def fits(self) -> bool:
        return self.required_gib <= self.budget_gib

    @property
    def headroom_gib(self) -> float:
        return self.budget_gib - self.required_gib


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    serving: str
    index: int
    region: str
    pool: str
    replicas: int
    tensor: int
    pipeline: int
    data: int
    nodes: int
    devices_per_pod: int
    memory: MemoryFit
    max_model_len: int | None
    memory_utilization: float
    chosen: Literal["auto", "explicit"]
    size: PodSize

    @property
    def devices_per_replica(self) -> int:
        return self.devices_per_pod * self.nodes

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


@dataclass(frozen=True, slots=True)
class PoolUse:
    pool: str
    region: str
    capacity: int
    used: int
    peak: int  # with every autoscaler at its maximum

    @property
    def free(self) -> int:
        return self.capacity - self.used


@dataclass(frozen=True)
class FleetPlan:
    placements: tuple[PlacementPlan, ...]
    pools: dict[str, PoolUse]
    warnings: tuple[Issue, ...]


def weights_gib(model: ModelFacts, serving: ModelServing) -> float:
    precision, quantized = capability.weights_precision(model, serving)
    factor = QUANTIZED_OVERHEAD if quantized else 1.0
    return model.params_b * 1e9 * BYTES_PER_PARAM[precision] * factor / GIB


def memory_fit(
    model: ModelFacts,
    serving: ModelServing,
    devices: int,
    pool: PoolFacts,
    utilization: float,
    max_len: int | None,
) -> MemoryFit:
    kv = None
    if model.kv_bytes_per_token is not None and max_len is not None:
        kv = model.kv_bytes_per_token * max_len / GIB
    return MemoryFit(
        weights_gib=weights_gib(model, serving),
        kv_cache_gib=kv,
        overhead_gib=OVERHEAD_GIB_PER_DEVICE * devices,
        budget_gib=devices * pool.memory_per_device_gib * utilization,
        activation_gib=kinds.ACTIVATION_GIB.get(model.kind, 0.0),
    )


@cache
def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def _tp_ok(tp: int, model: ModelFacts, pool: PoolFacts) -> bool:
    heads = model.num_attention_heads
    even = pool.vendor.families[pool.family].even_devices
    return (heads is None or heads % tp == 0) and not (even and tp % 2)


class _Context(NamedTuple):  # a tuple: made once per placement, 10,000 times per render
    """What sizing one placement depends on besides its layout."""

    s: ModelServing
    model: ModelFacts
    pool: PoolFacts
    template: DeployTemplate
    engine: catalog.Engine
    util: float
    max_len: int | None
    weights: float  # GiB: the same on every layout, computed once
    kv: float | None
    activations: float  # GiB: headroom of a kind sized without a KV cache; 0 for language models

    def fit(self, devices: int, pool: PoolFacts | None = None) -> MemoryFit:
        per_device = (pool or self.pool).memory_per_device_gib
        return MemoryFit(
            self.weights,
            self.kv,
            OVERHEAD_GIB_PER_DEVICE * devices,
            devices * per_device * self.util,
            self.activations,
        )

    @property
    def one_device(self) -> bool:
        return self.model.kind == "diffusion"


def _auto_layout(c: _Context, pool: PoolFacts) -> tuple[int, int, int, int] | None:
    """(tensor, pipeline, nodes, devices per pod): the smallest tensor parallel that fits one node;
    else the fewest whole nodes, split the engine's way (SGLang: tensor parallel across them; vLLM:
    tensor parallel per node, pipeline across nodes). None when nothing on `pool` fits."""
    per_node = pool.spec.devices_per_node
    for tp in (1,) if c.one_device else _divisors(per_node):
        if _tp_ok(tp, c.model, pool) and c.fit(tp, pool).fits:
            return tp, 1, 1, tp
    if c.one_device:
        return None
    usable = [d for d in _divisors(per_node) if _tp_ok(d, c.model, pool)]
    if not usable or not c.engine.multi_node:
        return None
    tp = max(usable)
    for nodes in range(2, pool.spec.node_count + 1):
        if not c.fit(tp * nodes, pool).fits:
            continue
        if c.engine.auto_multi_node == "tensor" and tp == per_node and _tp_ok(tp * nodes, c.model, pool):
            return tp * nodes, 1, nodes, tp
        return tp, nodes, nodes, tp
    return None


def _longest_fitting_len(c: _Context, devices: int) -> int | None:
    """The longest max_model_len whose KV cache still fits `devices`, in steps of 1024."""
    per_token = c.model.kv_bytes_per_token
    if per_token is None or c.max_len is None:
        return None
    fit = c.fit(devices)
    room = fit.budget_gib - fit.weights_gib - fit.overhead_gib
    longest = int(room * GIB / per_token) // 1024 * 1024
    return longest if 1024 <= longest < c.max_len else None


def _fewest_nodes(c: _Context) -> int | None:
    """Whole nodes of the pool's shape one replica would need, at most 64 (pipeline/tensor split)."""
    per_node = c.pool.spec.devices_per_node
    usable = [d for d in _divisors(per_node) if _tp_ok(d, c.model, c.pool)]
    if not usable:
        return None
    tp = max(usable)
    return next((n for n in range(2, 65) if c.fit(tp * n).fits), None)


def _fixes(c: _Context, fleet: Fleet, devices: int, region: str) -> str:
    """What would make a placement that does not fit fit, with numbers."""
    fixes: list[str] = []
    longest = _longest_fitting_len(c, devices)
    if longest is not None:
        fixes.append(f"max_model_len {longest} (or shorter) fits these {devices} devices")
    layout = _auto_layout(c, c.pool)
    if layout is not None and layout[0] * layout[1] != devices:
        tp, pp, nodes, _ = layout
        where = f" on {nodes} nodes" if nodes > 1 else ""
        fixes.append(f"parallelism: auto fits it (tensor {tp} x pipeline {pp}{where})")
    elif layout is None and c.one_device:
        pass  # a bigger device is the fix: the pools that have one are named below
    elif layout is None and c.engine.multi_node:
        fewest = _fewest_nodes(c)
        if fewest is not None:
            have = c.pool.spec.node_count
            fixes.append(f"{fewest} nodes per replica would fit (pool {c.pool.name} has {have})")
    elif layout is None:
        fixes.append(f"{c.engine.display_name} runs on one node: a vLLM or SGLang template can span nodes")
    others = []
    for name, other in fleet.pools.items():
        if other is c.pool or other.spec.region != region:
            continue
        if capability.check(c.model, c.s, c.template, other, "", fleet.pools):
            continue  # its hardware cannot run this checkpoint or quantization
        layout = _auto_layout(c, other)
        if layout is not None:
            tp, pp, nodes, _ = layout
            where = f" on {nodes} nodes" if nodes > 1 else ""
            others.append(f"{name} (tensor {tp} x pipeline {pp}{where})")
    if others:
        more = f" (and {len(others) - 3} more)" if len(others) > 3 else ""
        fixes.append(f"pool {' or '.join(others[:3])}{more} of region {region} fits it")
    return f"; fixes: {'; '.join(fixes)}" if fixes else ""


def _explicit(par: Parallelism, c: _Context) -> tuple[int, int] | Issue:
    """(nodes, devices per pod) for explicit parallelism, or what is inconsistent about it."""
    pool, model = c.pool, c.model
    per_node = pool.spec.devices_per_node
    devices = par.tensor * par.pipeline * par.data
    across = par.tensor > per_node
    if across and not c.engine.tensor_across_nodes:
        return Issue(
            "tensor",
            f"tensor parallel {par.tensor} is more than the {per_node} devices of a node and "
            f"{c.engine.display_name} does not split tensor parallel across nodes; use tensor "
            f"{per_node} x pipeline {-(-par.tensor // per_node)}",
        )
    if across and par.tensor % per_node:
        return Issue(
            "tensor",
            f"tensor parallel {par.tensor} across nodes must be a multiple of the {per_node} devices "
            f"of a node (e.g. {per_node * -(-par.tensor // per_node)})",
        )
    if not across and per_node % par.tensor:
        return Issue("tensor", f"tensor parallel {par.tensor} does not divide {per_node} devices per node")
    if model.num_attention_heads is not None and model.num_attention_heads % par.tensor:
        return Issue(
            "tensor",
            f"tensor parallel {par.tensor} does not divide the model's "
            f"{model.num_attention_heads} attention heads",
        )
    nodes = par.nodes if par.nodes is not None else max(1, -(-devices // per_node))
    if devices % nodes:
        return Issue(
            "nodes",
            f"{devices} devices (tensor x pipeline x data) do not split evenly over {nodes} nodes",
        )
    per_pod = devices // nodes
    if per_pod > per_node:
        return Issue(
            "nodes",
            f"{per_pod} devices per node needed but pool {pool.name!r} nodes have {per_node}",
        )
    if across and per_pod != per_node:
        return Issue(
            "nodes",
            f"tensor parallel across nodes takes every device of each node: {devices // per_node} "
            f"nodes of {per_node}, not {nodes}",
        )
    if pool.vendor.families[pool.family].even_devices and per_pod % 2:
        return Issue("tensor", f"{pool.family} devices are allocated in pairs; {per_pod} per pod is odd")
    return nodes, per_pod


def plan_placement(fleet: Fleet, s: ModelServing, index: int, path: str) -> PlacementPlan | Issue:
    p = s.placements[index]
    at = f"{path}.placements[{index}]"
    pool = fleet.pools[p.pool]
    model = fleet.models[s.name]
    template = fleet.templates[s.template]
    util = s.gpu_memory_utilization or template.gpu_memory_utilization or DEFAULT_MEMORY_UTILIZATION
    if s.max_model_len and model.max_position_embeddings and s.max_model_len > model.max_position_embeddings:
        return Issue(
            f"{path}.max_model_len",
            f"{s.max_model_len} is longer than the model's {model.max_position_embeddings} positions",
        )
    if model.kind == "llm":
        max_len = s.max_model_len or model.max_position_embeddings
        kv = model.kv_bytes_per_token * max_len / GIB if model.kv_bytes_per_token and max_len else None
        activations = 0.0
    else:  # no KV cache to size, no context to default (fleet.kinds)
        max_len, kv, activations = s.max_model_len, None, kinds.ACTIVATION_GIB[model.kind]
    engine = catalog.engines()[template.engine]
    c = _Context(s, model, pool, template, engine, util, max_len, weights_gib(model, s), kv, activations)
    par = s.parallelism_on(p)
    if par == "auto":
        chosen = _auto_layout(c, pool)
        if chosen is None:
            return Issue(at, _auto_refusal(c) + _fixes(c, fleet, _most_devices(c), p.region))
        tp, pp, nodes, per_pod = chosen
        dp = 1
        mode: Literal["auto", "explicit"] = "auto"
    else:
        layout = _explicit(par, c)
        where = f"{at}.parallelism" if p.parallelism is not None else f"{path}.parallelism"
        if c.one_device and par.tensor * par.pipeline * par.data > 1:
            layout = Issue(
                "tensor",
                f"{model.id} is {kinds.a(model.kind)}: a replica runs on one device (its "
                "weights are not split); remove parallelism and scale with replicas",
            )
        if isinstance(layout, Issue):
            return Issue(f"{where}.{layout.path}", layout.message)
        nodes, per_pod = layout
        tp, pp, dp = par.tensor, par.pipeline, par.data
        mode = "explicit"
    fit = c.fit(per_pod * nodes)
    if not fit.fits:
        cache = f" + KV cache {fit.kv_cache_gib:.1f}" if fit.kv_cache_gib is not None else ""
        cache += f" + activations {fit.activation_gib:.1f}" if fit.activation_gib else ""
        return Issue(
            at,
            f"model needs {fit.required_gib:.1f} GiB per replica (weights {fit.weights_gib:.1f}{cache} "
            f"+ overhead {fit.overhead_gib:.1f}) but {per_pod * nodes} x "
            f"{pool.memory_per_device_gib:g} GiB x {util:g} = {fit.budget_gib:.1f} GiB is available "
            f"(short by {-fit.headroom_gib:.1f} GiB)" + _fixes(c, fleet, per_pod * nodes, p.region),
        )
    if nodes > 1:
        region = fleet.regions[p.region]
        if not region.controllers.leader_worker_set:
            return Issue(
                at,
                f"needs {nodes} nodes per replica but region {p.region!r} has no LeaderWorkerSet "
                "controller (controllers.leader_worker_set)",
            )
    size = pod_size(pool, per_pod)
    if isinstance(size, Issue):
        return Issue(f"pools[{pool.name}].{size.path}", f"{at}: {size.message}")
    return PlacementPlan(
        serving=s.name,
        index=index,
        region=p.region,
        pool=p.pool,
        replicas=p.replicas,
        tensor=tp,
        pipeline=pp,
        data=dp,
        nodes=nodes,
        devices_per_pod=per_pod,
        memory=fit,
        max_model_len=max_len,
        memory_utilization=util,
        chosen=mode,
        size=size,
    )


def _most_devices(c: _Context) -> int:
    """What auto layout could use at most: every node, at the largest usable tensor parallel."""
    if c.one_device:
        return 1
    per_node = c.pool.spec.devices_per_node
    usable = [d for d in _divisors(per_node) if _tp_ok(d, c.model, c.pool)] or [per_node]
    return max(usable) * (c.pool.spec.node_count if c.engine.multi_node else 1)


def _auto_refusal(c: _Context) -> str:
    pool, per_node = c.pool, c.pool.spec.devices_per_node
    if not any(_tp_ok(d, c.model, pool) for d in _divisors(per_node)):
        return (
            f"no tensor parallel size suits both the model's {c.model.num_attention_heads} attention "
            f"heads and {pool.family} devices (divisors of {per_node}, in pairs when required); set "
            "parallelism"
        )
    devices = _most_devices(c)
    whole = c.fit(devices)
    usable = [d for d in _divisors(per_node) if _tp_ok(d, c.model, pool)]
    limit = f" at tensor parallel {max(usable)} per node" if max(usable) < per_node else ""
    span = f"all {pool.spec.node_count} nodes" if c.engine.multi_node else "one node"
    if c.one_device:  # a diffusion model: the weights are not split over devices
        limit, span = "", "one device"
    return (
        f"does not fit even on {span} of pool {pool.name!r}{limit}: needs "
        f"{whole.required_gib:.1f} GiB, {devices} x "
        f"{pool.memory_per_device_gib:g} GiB x {c.util:g} = {whole.budget_gib:.1f} GiB "
        f"(short by {-whole.headroom_gib:.1f} GiB)"
    )


@collector_paused
def plan_fleet(fleet: Fleet) -> FleetPlan:
    """Plan every placement and check pool capacity; PlanError lists every refusal."""
    issues: list[Issue] = []
    plans: list[PlacementPlan] = []
    used: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    users: dict[str, list[tuple[str, int, int]]] = defaultdict(list)  # formatted only if over
    for s in fleet.servings:
        path = f"servings[{s.name}]"
        for index in range(len(s.placements)):
            result = plan_placement(fleet, s, index, path)
            if isinstance(result, Issue):
                issues.append(result)
                continue
            plans.append(result)
            devices = result.devices_per_pod * result.nodes
            used[result.pool] += result.replicas * devices
            top = s.autoscaling.max_replicas if s.autoscaling else result.replicas
            peak[result.pool] += top * devices
            if result.replicas:
                users[result.pool].append((s.name, result.replicas, devices))
    pools: dict[str, PoolUse] = {}
    warnings: list[Issue] = []
    for name, pool in fleet.pools.items():
        use = PoolUse(name, pool.spec.region, pool.spec.devices, used[name], peak[name])
        pools[name] = use
        if use.used > use.capacity:
            asking = ", ".join(
                f"{serving} {replicas}x{devices}" for serving, replicas, devices in users[name]
            )
            issues.append(
                Issue(
                    f"pools[{name}]",
                    f"{use.capacity} devices but servings ask for {use.used} "
                    f"({asking}): over by {use.used - use.capacity}",
                )
            )
        elif use.peak > use.capacity:
            warnings.append(
                Issue(
                    f"pools[{name}]",
                    f"autoscalers at their maximum would ask for {use.peak} of {use.capacity} devices",
                )
            )
        if name in users and sharing.unknown(pool):
            warnings.append(
                Issue(
                    f"pools[{name}].sharing",
                    f"HAMi's memory resource for {pool.vendor.display_name} is not known: pods get whole "
                    "vGPUs without the planner's memory slice; add hami_shares to the vendor catalog",
                )
            )
    if issues:
        raise PlanError(issues)
    return FleetPlan(tuple(plans), pools, tuple(warnings))
