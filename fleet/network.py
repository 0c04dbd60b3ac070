"""The fast network of a multi-node replica: what every member of the group gets from its pool.

Members of one replica exchange activations every layer (NCCL, HCCL, GLOO), so a pool's `network`
reaches every pod of a multi-node group, leader and workers alike:

- `interface` replaces the vendor's default NIC in every *_SOCKET_IFNAME variable (NCCL, GLOO, HCCL,
  TP), since rendezvous on the wrong NIC hangs or crawls;
- `rdma_resource` x `rdma_count` is requested (requests equal limits) with capability IPC_LOCK, which
  RDMA needs to pin memory; NCCL is told to use InfiniBand/RoCE (`NCCL_IB_DISABLE=0`, and
  `NCCL_IB_HCA`, `NCCL_IB_GID_INDEX` when set: 3 is RoCEv2's usual index);
- `host_network` puts pods on the node's network with `dnsPolicy: ClusterFirstWithHostNet`, without
  which the leader's headless-service name would not resolve;
- `pod_annotations` (a Multus `k8s.v1.cni.cncf.io/networks` attachment) go on every member's pod.

Sources: rendering_facts.md §3 (kserve DP/EP RoCE sample, aibrix's Volcano Engine DeepSeek sample,
OME's SGLang RDMA runtime, SGLang's multi-node notes).
"""

from __future__ import annotations

from typing import Any

from fleet.stack import PoolFacts

SOCKET_VARIABLES = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "HCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME")


def env(pool: PoolFacts, base: dict[str, str]) -> dict[str, str]:
    """The vendor's multi-node env with the pool's interface and RDMA settings applied."""
    net = pool.spec.network
    out = dict(base)
    if net.interface is not None:
        for name in SOCKET_VARIABLES:
            if name in out:
                out[name] = net.interface
    if net.rdma_resource is not None and pool.spec.vendor != "ascend":  # HCCL reads /etc/hccn.conf
        out["NCCL_IB_DISABLE"] = "0"
    if net.ib_hca is not None:
        out["NCCL_IB_HCA"] = net.ib_hca
    if net.ib_gid_index is not None:
        out["NCCL_IB_GID_INDEX"] = str(net.ib_gid_index)
    return out


def resources(pool: PoolFacts) -> dict[str, str]:
    net = pool.spec.network
    return {net.rdma_resource: str(net.rdma_count)} if net.rdma_resource is not None else {}


def container_security(pool: PoolFacts) -> dict[str, Any] | None:
    if pool.spec.network.rdma_resource is None:
        return None
    return {"capabilities": {"add": ["IPC_LOCK"]}}


def pod_fields(pool: PoolFacts) -> dict[str, Any]:
    if not pool.spec.network.host_network:
        return {}
    return {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}


def pod_annotations(pool: PoolFacts) -> dict[str, str]:
    return dict(pool.spec.network.pod_annotations)
