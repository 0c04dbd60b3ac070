"""A synthetic fleet of any size: regions with NVIDIA and Ascend pools, servings across engines."""

from __future__ import annotations

from typing import Any

MODELS = ("qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "qwen3-8b", "qwen3-32b")


def synthetic_stack(servings: int, regions: int = 20) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(config, servings) as `fleet.stack.build_fleet` takes them; every serving fits its pool."""
    per_region = -(-servings // regions)
    nodes = max(1, -(-per_region * 4 // 8))  # room for up to 4 devices per serving
    config: dict[str, Any] = {
        "regions": [
            {
                "name": f"r{r:02d}",
                "cluster": {"kubeconfig_secret": f"kubeconfig-r{r:02d}", "cluster_identifier": f"r{r:02d}"},
                "model_store": {
                    "endpoint": "https://s3.example.com",
                    "bucket": "models",
                    "credentials_secret": "model-store",
                },
                "gateway_domain": f"r{r:02d}.example.com",
                "controllers": {"leader_worker_set": True},
            }
            for r in range(regions)
        ],
        "pools": [
            {
                "name": f"r{r:02d}-{kind}",
                "region": f"r{r:02d}",
                "accelerator": accel,
                "devices_per_node": 8,
                "nodes": nodes,
            }
            for r in range(regions)
            for kind, accel in (("h100", "nvidia/h100-80g"), ("910b", "ascend/910b3"))
        ],
        "templates": [
            {
                "name": "vllm",
                "engine": "vllm",
                "engine_version": "0.33.0",
                "args": ["--enable-prefix-caching"],
            },
            {"name": "vllm-ascend", "engine": "vllm", "engine_version": "0.11.0"},
            {"name": "sglang", "engine": "sglang", "engine_version": "0.5.23"},
        ],
    }
    out: list[tuple[str, Any]] = []
    for i in range(servings):
        region = f"r{i % regions:02d}"
        ascend = i % 3 == 2
        name = f"s{i:05d}"
        out.append(
            (
                f"servings[{name}]",
                {
                    "name": name,
                    "workspace": f"ws{i % 50}",
                    "model": MODELS[i % len(MODELS)],
                    "template": "vllm-ascend" if ascend else ("sglang" if i % 3 == 1 else "vllm"),
                    "max_model_len": 8192,
                    "extra_args": ["--max-num-seqs", "64"] if not ascend and i % 3 == 0 else [],
                    "placements": [
                        {"region": region, "pool": f"{region}-{'910b' if ascend else 'h100'}", "replicas": 1}
                    ],
                },
            )
        )
    return config, out
