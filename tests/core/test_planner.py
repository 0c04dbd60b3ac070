"""The planner on real hardware shapes: parallelism chosen, refusals explained, capacity counted.

Memory expectations are computed here from the formula documented in `fleet/planner.py` (weights +
one full-length sequence of KV cache + 1.5 GiB per device <= devices x memory x 0.9), independently
of the planner's own code, so a change to the arithmetic shows up as a failing test.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleet import catalog
from fleet.errors import PlanError
from fleet.planner import FleetPlan, PlacementPlan, plan_fleet
from fleet.stack import Fleet
from tests.fixtures import factories as f
from tests.fixtures.factories import Hardware

GIB = 1024**3
BYTES = {"bfloat16": 2.0, "float16": 2.0, "fp8": 1.0}


def required_gib(model_id: str, devices: int, max_len: int) -> float:
    m = catalog.models()[model_id]
    weights = m.params_b * 1e9 * BYTES[m.dtype] / GIB
    if m.kv_lora_rank is not None:  # MLA: one latent vector (+ rope part) per layer
        kv_per_token = m.num_layers * (m.kv_lora_rank + (m.qk_rope_head_dim or 0)) * 2
    else:
        kv_per_token = 2 * m.num_layers * m.num_kv_heads * m.head_dim * 2
    return weights + kv_per_token * max_len / GIB + 1.5 * devices


def budget_gib(hw: Hardware, devices: int) -> float:
    accel = catalog.vendors()[hw.vendor].accelerators[hw.accelerator.split("/")[1]]
    return devices * accel.memory_gib * 0.9


def fits(model_id: str, hw: Hardware, devices: int, max_len: int) -> bool:
    return required_gib(model_id, devices, max_len) <= budget_gib(hw, devices)


def plan_one(hw: Hardware, **serving: Any) -> PlacementPlan:
    serving.setdefault("template", f.vllm_template(hw))
    plan = plan_fleet(f.on(hw, f.serving(pool=hw.pool_name, **serving)))
    [placement] = plan.placements
    return placement


def plan_error(fleet: Fleet) -> PlanError:
    with pytest.raises(PlanError) as caught:
        plan_fleet(fleet)
    return caught.value


def test_7b_fits_on_one_h100(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="qwen2.5-7b-instruct", max_model_len=32768)
    assert (plan.tensor, plan.pipeline, plan.nodes, plan.devices_per_pod) == (1, 1, 1, 1)
    assert plan.chosen == "auto"
    assert plan.memory.required_gib == pytest.approx(required_gib("qwen2.5-7b-instruct", 1, 32768))


def test_72b_bf16_gets_the_smallest_tensor_parallel_that_fits(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="qwen2.5-72b-instruct", max_model_len=32768)
    assert fits("qwen2.5-72b-instruct", nvidia_h100_80g_x8, plan.tensor, 32768)
    assert not fits("qwen2.5-72b-instruct", nvidia_h100_80g_x8, plan.tensor // 2, 32768)
    assert plan.tensor == 4  # 135 GiB of weights + 10 GiB of KV do not fit 2 x 72 GiB
    assert plan.nodes == 1


@pytest.mark.parametrize("hw", f.HARDWARE, ids=[h.id for h in f.HARDWARE])
def test_auto_tensor_parallel_is_minimal_on_every_accelerator(hw: Hardware) -> None:
    """qwen3-32b fits one node of every accelerator we know; the planner takes as few devices as
    it can: the next smaller tensor parallel size it could have used does not fit."""
    plan = plan_one(hw, model="qwen3-32b", max_model_len=8192)
    assert plan.nodes == 1 and plan.pipeline == 1
    assert hw.devices_per_node % plan.tensor == 0
    assert fits("qwen3-32b", hw, plan.tensor, 8192)
    even = catalog.vendors()[hw.vendor].families[plan_family(hw)].even_devices
    smaller = [d for d in range(1, plan.tensor) if hw.devices_per_node % d == 0 and not (even and d % 2)]
    assert not any(fits("qwen3-32b", hw, d, 8192) for d in smaller), smaller


def plan_family(hw: Hardware) -> str:
    return catalog.vendors()[hw.vendor].accelerators[hw.accelerator.split("/")[1]].family


def test_a3_never_picks_an_odd_tensor_parallel(ascend_910c_x16: Hardware) -> None:
    # An 8B model fits one 64 GiB NPU, but A3 NPUs are allocated in pairs.
    assert fits("llama-3.1-8b-instruct", ascend_910c_x16, 1, 8192)
    plan = plan_one(ascend_910c_x16, model="llama-3.1-8b-instruct")
    assert plan.tensor == 2 and plan.devices_per_pod == 2


@pytest.mark.parametrize("model", ["qwen2.5-7b-instruct", "qwen3-32b", "qwen2.5-72b-instruct"])
def test_a3_tensor_parallel_is_even_for_every_model(ascend_910c_x16: Hardware, model: str) -> None:
    assert plan_one(ascend_910c_x16, model=model).tensor % 2 == 0


def test_model_with_heads_no_pair_divides_is_refused_on_a3(ascend_910c_x16: Hardware) -> None:
    """71 heads: only tensor parallel 1 divides them, and A3 allocates pairs. A refusal, not a crash."""
    source = {
        "uri": "s3://models/falcon-7b",
        "params_b": 7,
        "dtype": "bfloat16",
        "num_attention_heads": 71,
    }
    fleet = f.on(
        ascend_910c_x16,
        f.serving(model=source, pool=ascend_910c_x16.pool_name, template="vllm-011"),
    )
    [issue] = plan_error(fleet).issues
    assert issue.path == "servings[chat].placements[0]"
    assert "no tensor parallel size suits both the model's 71 attention heads" in issue.message


def test_heads_limit_multi_node_shortfall_is_honest(nvidia_h100_80g_x8: Hardware) -> None:
    """With 71 heads only tensor parallel 1 is possible: two nodes give 2 devices, not 16."""
    source = {
        "uri": "s3://models/falcon-180b",
        "params_b": 180,
        "dtype": "bfloat16",
        "num_attention_heads": 71,
    }
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, f.serving(model=source))).issues
    weights = 180e9 * 2 / GIB
    short = weights + 2 * 1.5 - 2 * 80 * 0.9
    assert "at tensor parallel 1 per node" in issue.message
    assert f"(short by {short:.1f} GiB)" in issue.message


def test_deepseek_r1_goes_multi_node_with_pipeline_equal_to_nodes(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="deepseek-r1")
    assert not fits("deepseek-r1", nvidia_h100_80g_x8, 8, 8192)
    assert fits("deepseek-r1", nvidia_h100_80g_x8, 16, 8192)
    assert (plan.tensor, plan.pipeline, plan.nodes) == (8, 2, 2)
    assert plan.devices_per_pod == 8 and plan.devices_per_replica == 16
    assert plan.multi_node


def test_refusal_states_the_shortfall_in_gib(ascend_310p_x4: Hardware) -> None:
    serving = f.serving(
        model="llama-3.1-70b-instruct",
        pool=ascend_310p_x4.pool_name,
        template="vllm-011",
        max_model_len=131072,
    )
    [issue] = plan_error(f.on(ascend_310p_x4, serving)).issues
    devices = 2 * 4
    short = required_gib("llama-3.1-70b-instruct", devices, 131072) - budget_gib(ascend_310p_x4, devices)
    assert issue.path == "servings[chat].placements[0]"
    assert "does not fit even on all 2 nodes of pool 'ascend-310p-x4'" in issue.message
    assert f"(short by {short:.1f} GiB)" in issue.message
    assert short > 0


def test_explicit_parallelism_too_small_states_the_shortfall(nvidia_h100_80g_x8: Hardware) -> None:
    serving = f.serving(model="qwen2.5-72b-instruct", max_model_len=32768, parallelism={"tensor": 2})
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, serving)).issues
    short = required_gib("qwen2.5-72b-instruct", 2, 32768) - budget_gib(nvidia_h100_80g_x8, 2)
    assert issue.path == "servings[chat].placements[0]"
    assert issue.message.startswith("model needs ")
    assert f"(short by {short:.1f} GiB)" in issue.message


def test_explicit_tensor_that_does_not_divide_devices_per_node(nvidia_h100_80g_x8: Hardware) -> None:
    serving = f.serving(parallelism={"tensor": 3})
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, serving)).issues
    assert issue.path == "servings[chat].parallelism.tensor"
    assert issue.message == "tensor parallel 3 does not divide 8 devices per node"


def test_placement_parallelism_error_points_at_the_placement(nvidia_h100_80g_x8: Hardware) -> None:
    serving = f.serving()
    serving["placements"][0]["parallelism"] = {"tensor": 3}
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, serving)).issues
    assert issue.path == "servings[chat].placements[0].parallelism.tensor"


def test_explicit_tensor_must_divide_attention_heads(nvidia_h100_80g_x8: Hardware) -> None:
    # qwen2.5-7b has 28 heads: 8 divides the node but not the heads.
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, f.serving(parallelism={"tensor": 8}))).issues
    assert issue.path == "servings[chat].parallelism.tensor"
    assert "28 attention heads" in issue.message


def test_explicit_odd_devices_per_pod_on_a3(ascend_910c_x16: Hardware) -> None:
    serving = f.serving(pool=ascend_910c_x16.pool_name, template="vllm-011", parallelism={"tensor": 1})
    [issue] = plan_error(f.on(ascend_910c_x16, serving)).issues
    assert issue.path == "servings[chat].parallelism.tensor"
    assert "allocated in pairs; 1 per pod is odd" in issue.message


def test_explicit_multi_node_layout(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="deepseek-r1", parallelism={"tensor": 8, "pipeline": 2})
    assert (plan.nodes, plan.devices_per_pod, plan.chosen) == (2, 8, "explicit")


def test_multi_node_needs_leader_worker_set(nvidia_h100_80g_x8: Hardware) -> None:
    config = f.config(regions=[f.region(lws=False)], pools=[nvidia_h100_80g_x8.pool()])
    [issue] = plan_error(f.fleet(config, f.serving(model="deepseek-r1"))).issues
    assert issue.path == "servings[chat].placements[0]"
    assert "needs 2 nodes per replica but region 'cn-east' has no LeaderWorkerSet" in issue.message


def test_single_node_does_not_need_leader_worker_set(nvidia_h100_80g_x8: Hardware) -> None:
    config = f.config(regions=[f.region(lws=False)], pools=[nvidia_h100_80g_x8.pool()])
    assert plan_fleet(f.fleet(config, f.serving())).placements[0].nodes == 1


def test_pool_capacity_overflow_names_the_pool_and_the_overage(nvidia_h100_80g_x8: Hardware) -> None:
    fleet = f.on(
        nvidia_h100_80g_x8,
        f.serving("chat", replicas=9),
        f.serving("big", model="qwen2.5-72b-instruct", max_model_len=32768, replicas=2),
    )
    [issue] = plan_error(fleet).issues
    assert issue.path == "pools[nvidia-h100-80g-x8]"
    assert issue.message == "16 devices but servings ask for 17 (chat 9x1, big 2x4): over by 1"


def test_pool_exactly_full_is_accepted(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_fleet(f.on(nvidia_h100_80g_x8, f.serving(replicas=16)))
    use = plan.pools["nvidia-h100-80g-x8"]
    assert (use.capacity, use.used, use.free) == (16, 16, 0)
    assert plan.warnings == ()


def test_autoscaling_peak_over_capacity_is_a_warning(nvidia_h100_80g_x8: Hardware) -> None:
    serving = f.serving(replicas=2, autoscaling={"min_replicas": 1, "max_replicas": 20})
    plan: FleetPlan = plan_fleet(f.on(nvidia_h100_80g_x8, serving))
    assert plan.pools["nvidia-h100-80g-x8"].peak == 20
    [warning] = plan.warnings
    assert warning.path == "pools[nvidia-h100-80g-x8]"
    assert warning.message == "autoscalers at their maximum would ask for 20 of 16 devices"


def test_autoscaled_pool_counts_its_maximum_nodes(nvidia_l20_x8_hami: Hardware) -> None:
    pool = nvidia_l20_x8_hami.pool(nodes={"min": 1, "max": 3})
    plan = plan_fleet(f.fleet(f.config(pools=[pool]), f.serving(pool=nvidia_l20_x8_hami.pool_name)))
    assert plan.pools[nvidia_l20_x8_hami.pool_name].capacity == 24


def test_max_model_len_over_the_models_positions(nvidia_h100_80g_x8: Hardware) -> None:
    [issue] = plan_error(f.on(nvidia_h100_80g_x8, f.serving(max_model_len=65536))).issues
    assert issue.path == "servings[chat].max_model_len"
    assert issue.message == "65536 is longer than the model's 32768 positions"


def test_without_max_model_len_the_model_positions_are_sized(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="llama-3.1-8b-instruct", max_model_len=None)
    assert plan.max_model_len == 131072
    assert plan.memory.kv_cache_gib == pytest.approx(16.0)  # 32 layers x 8 heads x 128 x 4 B x 128k


def test_quantization_shrinks_the_weights(nvidia_h100_80g_x8: Hardware) -> None:
    plain = plan_one(nvidia_h100_80g_x8, model="qwen2.5-72b-instruct", max_model_len=32768)
    fp8 = plan_one(nvidia_h100_80g_x8, model="qwen2.5-72b-instruct", max_model_len=32768, quantization="fp8")
    assert fp8.memory.weights_gib == pytest.approx(plain.memory.weights_gib / 2 * 1.1)
    assert fp8.tensor < plain.tensor


def test_memory_utilization_comes_from_serving_then_template(nvidia_h100_80g_x8: Hardware) -> None:
    templates = [f.template(gpu_memory_utilization=0.8)]
    config = f.config(pools=[nvidia_h100_80g_x8.pool()], templates=templates)
    assert plan_fleet(f.fleet(config, f.serving())).placements[0].memory_utilization == 0.8
    serving = f.serving(gpu_memory_utilization=0.95)
    assert plan_fleet(f.fleet(config, serving)).placements[0].memory_utilization == 0.95


def test_every_refusal_is_reported_together(nvidia_h100_80g_x8: Hardware) -> None:
    fleet = f.on(
        nvidia_h100_80g_x8,
        f.serving("aa", max_model_len=65536),
        f.serving("bb", parallelism={"tensor": 3}),
    )
    paths = {i.path for i in plan_error(fleet).issues}
    assert paths == {"servings[aa].max_model_len", "servings[bb].parallelism.tensor"}


@pytest.mark.parametrize("model", ["bge-m3", "bge-reranker-v2-m3", "whisper-large-v3"])
def test_pooling_and_whisper_models_are_sized_without_a_kv_cache(
    nvidia_h100_80g_x8: Hardware, model: str
) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model=model, max_model_len=None)
    entry = catalog.models()[model]
    weights = entry.params_b * 1e9 * (4 if entry.dtype == "float32" else 2) / 1024**3
    assert plan.memory.kv_cache_gib is None and plan.max_model_len is None
    assert plan.memory.required_gib == pytest.approx(weights + 2.0 + 1.5)  # weights + activations + overhead
    assert (plan.tensor, plan.devices_per_pod) == (1, 1)


def test_a_diffusion_model_is_sized_by_weights_and_activation_headroom(nvidia_h100_80g_x8: Hardware) -> None:
    diffusion = f.template(
        "sglang-diffusion",
        engine="sglang-diffusion",
        engine_version="0.5.23",
        images={"nvidia": "registry.example.com/modelfleet/sglang-diffusion:0.5.23"},
    )
    serving = f.serving(model="qwen-image", max_model_len=None, template="sglang-diffusion")
    [plan] = plan_fleet(f.on(nvidia_h100_80g_x8, serving, templates=[diffusion])).placements
    weights = 28.3e9 * 2 / 1024**3
    assert plan.memory.kv_cache_gib is None and plan.max_model_len is None
    assert plan.memory.activation_gib == 8.0
    assert plan.memory.required_gib == pytest.approx(weights + 8.0 + 1.5)
    assert (plan.tensor, plan.pipeline, plan.nodes, plan.devices_per_pod) == (1, 1, 1, 1)


def test_a_vision_model_is_still_a_language_model(nvidia_h100_80g_x8: Hardware) -> None:
    plan = plan_one(nvidia_h100_80g_x8, model="qwen2.5-vl-7b-instruct", max_model_len=32768)
    assert plan.memory.kv_cache_gib is not None and plan.memory.activation_gib == 0.0
