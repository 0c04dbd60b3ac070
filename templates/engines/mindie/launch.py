"""Modelfleet's MindIE launcher: flags in, MindIE Service config.json out, then exec the daemon.

MindIE Service has no command line: it reads `<install>/conf/config.json`. This script, mounted into
the MindIE image from a ConfigMap, gives it one, so MindIE servings are rendered and validated like
every other engine (the flags are in fleet/data/engines/mindie-<version>.json). Standard library only:
it runs inside the vendor's image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

INSTALL = Path(os.environ.get("MIES_INSTALL_PATH", "/usr/local/Ascend/mindie/latest/mindie-service"))

# flag -> (path in config.json, converter); ModelConfig[0] is the one model this server runs.
MODEL = ("BackendConfig", "ModelDeployConfig", "ModelConfig", 0)
KEYS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "ip_address": (("ServerConfig", "ipAddress"), str),
    "port": (("ServerConfig", "port"), int),
    "management_port": (("ServerConfig", "managementPort"), int),
    "metrics_port": (("ServerConfig", "metricsPort"), int),
    "npu_device_ids": (("BackendConfig", "npuDeviceIds"), lambda v: [[int(i) for i in v.split(",")]]),
    "max_seq_len": (("BackendConfig", "ModelDeployConfig", "maxSeqLen"), int),
    "max_input_token_len": (("BackendConfig", "ModelDeployConfig", "maxInputTokenLen"), int),
    "model_name": ((*MODEL, "modelName"), str),
    "model_weight_path": ((*MODEL, "modelWeightPath"), str),
    "world_size": ((*MODEL, "worldSize"), int),
    "cpu_mem_size": ((*MODEL, "cpuMemSize"), int),
    "npu_mem_size": ((*MODEL, "npuMemSize"), int),
    "backend_type": ((*MODEL, "backendType"), str),
    "trust_remote_code": ((*MODEL, "trustRemoteCode"), bool),
    "max_prefill_tokens": (("BackendConfig", "ScheduleConfig", "maxPrefillTokens"), int),
    "max_batch_size": (("BackendConfig", "ScheduleConfig", "maxBatchSize"), int),
    "max_prefill_batch_size": (("BackendConfig", "ScheduleConfig", "maxPrefillBatchSize"), int),
    "max_iter_times": (("BackendConfig", "ScheduleConfig", "maxIterTimes"), int),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description=__doc__)
    for dest, (_, convert) in KEYS.items():
        flag = "--" + dest.replace("_", "-")
        if convert is bool:
            p.add_argument(flag, dest=dest, action="store_true", default=None)
        elif convert is int:
            p.add_argument(flag, dest=dest, type=int)
        else:
            p.add_argument(flag, dest=dest, type=str)
    return p


def apply(config: dict[str, Any], options: argparse.Namespace) -> dict[str, Any]:
    """Set every given option in a copy of `config`; the rest of MindIE's defaults stay."""
    out: dict[str, Any] = json.loads(json.dumps(config))
    for dest, (path, convert) in KEYS.items():
        value = getattr(options, dest)
        if value is None:
            continue
        node: Any = out
        for part in path[:-1]:
            if isinstance(part, int):
                while len(node) <= part:
                    node.append({})
                node = node[part]
            else:
                node = node.setdefault(part, [] if part == "ModelConfig" else {})
        node[path[-1]] = value if convert in (int, str, bool) else convert(value)
    server = out.setdefault("ServerConfig", {})
    if server.get("ipAddress") == "0.0.0.0":
        server["allowAllZeroIpListening"] = True  # MindIE refuses 0.0.0.0 unless told
    server["httpsEnabled"] = False  # TLS ends at the gateway; pods talk plain HTTP in-cluster
    return out


def main(argv: list[str]) -> None:
    options = parser().parse_args(argv)
    path = INSTALL / "conf" / "config.json"
    config = json.loads(path.read_text("utf-8")) if path.exists() else {}
    path.write_text(json.dumps(apply(config, options), indent=2), "utf-8")
    daemon = INSTALL / "bin" / "mindieservice_daemon"
    os.execv(str(daemon), [str(daemon)])


if __name__ == "__main__":
    main(sys.argv[1:])
