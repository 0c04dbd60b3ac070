"""Rendering cases, engine x vendor x case: the goldens pin each one, the invariants check them all.

Each case is one serving on one pool of named hardware, changed one thing at a time from a base case.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def id(self) -> str:
        return f"{self.engine}/{self.vendor}/{self.name}"

    def fleet(self) -> Fleet:
        return f.on(self.hardware, f.serving(pool=self.hardware.pool_name, **self.serving))


def _case(engine: str, name: str, hw: Hardware, **serving: Any) -> Case:
    template = {"vllm": f.vllm_template(hw), "sglang": "sglang", "mindie": "mindie"}[engine]
    serving.setdefault("template", template)
    return Case(engine, hw.vendor, name, hw, serving)


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
)
CASE_IDS = [c.id for c in CASES]
BY_ID = {c.id: c for c in CASES}


@cache
def rendering(case_id: str) -> Rendering:
    return render_fleet(BY_ID[case_id].fleet())
