"""CPU and memory for every container of a serving pod, requests equal to limits: Guaranteed QoS.

A pod is Guaranteed only when every container, init containers included, sets CPU and memory requests
equal to its limits (Kubernetes' pod-qos rules; accelerators do not count). BestEffort pods are the
first evicted under memory pressure: a serving that took ten minutes to load must not be.

The rule (docs/ops-guide.md, "Pod sizing"):

- the engine container gets the pod's share of its node: allocatable CPUs and memory x devices per
  pod / devices per node, rounded down to whole CPUs (the static CPU manager pins whole cores to
  Guaranteed pods) and whole GiB, so pods of one shape fill a node exactly;
- a pool that does not state its nodes' allocatable (`cpu_per_node`, `memory_per_node_gib`) is sized
  at 8 CPUs and 32 GiB per device, the smaller of the sizes peers publish (vllm-ascend's nightly LWS:
  125 CPUs / 512 GiB for 16 NPUs; KServe's DeepSeek sample: 128 / 512 GiB for 8 GPUs), with a warning;
- memory includes /dev/shm, a memory-backed emptyDir charged to the pod: the share must hold it plus
  8 GiB for the engine's own process, or the placement is refused;
- init containers (weights fetch, waiting for the leader's fetch) get 2 CPUs and 4 GiB, or the
  engine's share if smaller: they run before the engine, so they reserve nothing extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fleet.errors import Issue
from fleet.stack import PoolFacts

DEFAULT_CPU_PER_DEVICE = 8
DEFAULT_MEMORY_GIB_PER_DEVICE = 32
SHM_GIB = 16
ENGINE_HOST_GIB = 8  # beyond /dev/shm: the engine process, tokenizer, host-side runtime buffers
INIT_CPU = 2
INIT_MEMORY_GIB = 4


@dataclass(frozen=True, slots=True)
class PodSize:
    cpu: int
    memory_gib: int
    init_cpu: int
    init_memory_gib: int
    assumed: bool  # the pool states no allocatable: per-device defaults were used

    @property
    def engine(self) -> dict[str, Any]:
        return _resources(self.cpu, self.memory_gib)

    @property
    def init(self) -> dict[str, Any]:
        return _resources(self.init_cpu, self.init_memory_gib)


def _resources(cpu: int, memory_gib: int) -> dict[str, Any]:
    amount, memory = str(cpu), f"{memory_gib}Gi"
    return {"requests": {"cpu": amount, "memory": memory}, "limits": {"cpu": amount, "memory": memory}}


def pod_size(pool: PoolFacts, devices_per_pod: int) -> PodSize | Issue:
    """The pod's CPU and memory, or why the pool's nodes cannot hold it (path relative to the pool)."""
    spec = pool.spec
    share = devices_per_pod / spec.devices_per_node
    assumed = spec.cpu_per_node is None or spec.memory_per_node_gib is None
    cpu_node = spec.cpu_per_node or DEFAULT_CPU_PER_DEVICE * spec.devices_per_node
    memory_node = spec.memory_per_node_gib or DEFAULT_MEMORY_GIB_PER_DEVICE * spec.devices_per_node
    cpu = math.floor(cpu_node * share)
    memory = math.floor(memory_node * share)
    needed = SHM_GIB + ENGINE_HOST_GIB
    if memory < needed:
        return Issue(
            "memory_per_node_gib",
            f"a pod with {devices_per_pod} of the {spec.devices_per_node} devices gets {memory} GiB of "
            f"the node's {memory_node:g} GiB but needs {needed} ({SHM_GIB} GiB /dev/shm + "
            f"{ENGINE_HOST_GIB} GiB for the engine); check the pool's memory_per_node_gib (at least "
            f"{math.ceil(needed / share)} GiB per node) or use more devices per pod",
        )
    if cpu < 1:
        return Issue(
            "cpu_per_node",
            f"a pod with {devices_per_pod} of the {spec.devices_per_node} devices gets less than one "
            f"of the node's {cpu_node:g} CPUs; check the pool's cpu_per_node",
        )
    return PodSize(cpu, memory, min(INIT_CPU, cpu), min(INIT_MEMORY_GIB, memory), assumed)
