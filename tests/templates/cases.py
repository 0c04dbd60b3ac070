"""Rendering cases, engine x vendor x case: the goldens pin each one, the invariants check them all.

Each case is one serving on one pool of named hardware, changed one thing at a time from a base case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fleet.pipeline import Rendering, render_fleet
from fleet.stack import Fleet
from tests.fixtures import factories as f
from tests.fixtures.factories import Hardware


@dataclass(frozen=True)
class Case:
    engine: str
    vendor: str
    name: str
    hardware: Hardware
    serving: dict[str, Any]
    region: Mapping[str, Any] = field(default_factory=dict)  # overrides of the one region's fields

    @property
    def id(self) -> str:
        return f"{self.engine}/{self.vendor}/{self.name}"

    def fleet(self) -> Fleet:
        serving = f.serving(pool=self.hardware.pool_name, **self.serving)
        return f.on(self.hardware, serving, regions=[f.region(**self.region)])


def _case(
    engine: str, name: str, hw: Hardware, region: Mapping[str, Any] | None = None, **serving: Any
) -> Case:
    template = {"vllm": f.vllm_template(hw), "sglang": "sglang", "mindie": "mindie"}[engine]
    serving.setdefault("template", template)
    return Case(engine, hw.vendor, name, hw, serving, region or {})


# Two 8 x H100 nodes on RoCE: a Multus attachment, one RDMA device per pod, NCCL on net1 (as KServe's
# DeepSeek DP/EP sample), with the nodes' allocatable stated.
nvidia_h100_80g_x8_roce = Hardware(
    "nvidia_h100_80g_x8_roce",
    "nvidia/h100-80g",
    8,
    extra={
        "cpu_per_node": 192,
        "memory_per_node_gib": 1800,
        "network": {
            "interface": "net1",
            "rdma_resource": "rdma/roce_gdr",
            "rdma_count": 1,
            "ib_gid_index": 3,
            "pod_annotations": {"k8s.v1.cni.cncf.io/networks": "roce-p2"},
        },
    },
)
# HAMi-shared L20s handing out 24 GiB and half the cores of a card per vGPU.
nvidia_l20_x8_hami_slice = Hardware(
    "nvidia_l20_x8_hami_slice",
    "nvidia/l20",
    8,
    extra={"sharing": "hami", "memory_per_device_gib": 24, "hami_cores_percent": 50},
)
SHARED_CACHE = {"model_store": {**f.region()["model_store"], "cache": {"pvc": "model-cache"}}}
HUB_MIRROR = {"model_hub": {"hf_endpoint": "https://hf-mirror.com"}}


CASES: tuple[Case, ...] = (
    _case("vllm", "single-node", f.nvidia_h100_80g_x8, model="qwen2.5-7b-instruct"),
    _case(
        "vllm",
        "hami-tp2-autoscaled",
        f.nvidia_l20_x8_hami,
        model="qwen3-8b",
        parallelism={"tensor": 2},
        autoscaling={"min_replicas": 1, "max_replicas": 3, "target": 8},
    ),
    _case("vllm", "multi-node-native", f.nvidia_h100_80g_x8, model="deepseek-r1"),
    _case("vllm", "multi-node-ray", f.nvidia_h100_80g_x8, model="deepseek-r1", template="vllm-011"),
    _case("vllm", "910b", f.ascend_910b3_x8, model="qwen2.5-7b-instruct"),
    _case("vllm", "a3", f.ascend_910c_x16, model="llama-3.1-8b-instruct"),
    _case("vllm", "310p", f.ascend_310p_x4, model="qwen3-8b", max_model_len=4096),
    _case("sglang", "single-node", f.nvidia_h100_80g_x8, model="qwen3-32b"),
    _case("sglang", "multi-node", f.nvidia_h100_80g_x8, model="deepseek-r1"),
    _case("sglang", "910b", f.ascend_910b3_x8, model="qwen3-32b"),
    _case("mindie", "910b", f.ascend_910b3_x8, model="qwen2.5-72b-instruct", parallelism={"tensor": 4}),
    _case("vllm", "single-node", f.metax_c500_x8, model="qwen2.5-7b-instruct"),
    _case("vllm", "single-node", f.biren_br166_x8, model="qwen3-8b"),
    _case("vllm", "single-node", f.amd_mi300x_x8, model="qwen2.5-72b-instruct"),
    _case("sglang", "multi-node-roce", nvidia_h100_80g_x8_roce, SHARED_CACHE, model="deepseek-r1"),
    _case("vllm", "multi-node-ray-roce", nvidia_h100_80g_x8_roce, model="deepseek-r1", template="vllm-011"),
    _case("vllm", "hami-slice", nvidia_l20_x8_hami_slice, model="qwen3-8b", parallelism={"tensor": 2}),
    _case(
        "vllm",
        "pvc-source",
        f.nvidia_h100_80g_x8,
        model={"uri": "pvc://team-models/qwen3-8b-ft", "params_b": 8.19, "dtype": "bfloat16"},
    ),
    _case(
        "vllm",
        "hf-source-mirror",
        f.nvidia_h100_80g_x8,
        HUB_MIRROR,
        model={
            "uri": "hf://Qwen/Qwen3-8B@main",
            "params_b": 8.19,
            "dtype": "bfloat16",
            "num_layers": 36,
            "num_attention_heads": 32,
            "num_kv_heads": 8,
            "head_dim": 128,
        },
        secret_env={"VLLM_API_KEY": {"name": "chat-api-key", "key": "key"}},
        extra_args=["--api-key", "$(VLLM_API_KEY)"],
    ),
    _case(
        "vllm",
        "910b-modelslim",
        f.ascend_910b3_x8,
        model={
            "uri": "s3://models-cn-east/qwen3-32b-w8a8",
            "params_b": 32.8,
            "dtype": "int8",
            "quantization": "ascend",
        },
    ),
    _case("vllm", "fp8-online", f.nvidia_h100_80g_x8, model="qwen3-32b", quantization="fp8"),
    # Models that are not (only) chat models: what serves each kind (fleet/kinds.py).
    _case("vllm", "embedding", f.nvidia_h100_80g_x8, model="bge-m3"),
    _case("vllm", "rerank", f.ascend_910b3_x8, model="bge-reranker-v2-m3"),
    _case("vllm", "transcription", f.nvidia_h100_80g_x8, model="whisper-large-v3"),
    _case(
        "vllm",
        "vision-limits",
        f.nvidia_h100_80g_x8,
        model="qwen2.5-vl-7b-instruct",
        max_model_len=32768,
        multimodal_limits={"image": 4, "video": 1},
    ),
    _case("sglang", "embedding", f.nvidia_h100_80g_x8, model="bge-m3"),
    _case("sglang", "vision", f.nvidia_h100_80g_x8, model="qwen2.5-vl-7b-instruct", max_model_len=32768),
)
CASE_IDS = [c.id for c in CASES]
BY_ID = {c.id: c for c in CASES}


@cache
def rendering(case_id: str) -> Rendering:
    return render_fleet(BY_ID[case_id].fleet())
