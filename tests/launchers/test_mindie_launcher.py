"""The MindIE launcher turns validated flags into MindIE's config.json, keeping MindIE's other defaults."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fleet.flags import load_schema, validate_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mindie_launch", ROOT / "templates/engines/mindie/launch.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flag_schema_matches_the_launcher_parser(launcher: ModuleType) -> None:
    sys.path.insert(0, str(ROOT / "fleet/data/engines"))
    try:
        from dump_flags import dump
    finally:
        sys.path.pop(0)
    parsed = {k: v for k, v in dump(launcher.parser()).items() if k != "--help"}
    shipped = json.loads((ROOT / "fleet/data/engines/mindie-2.1.rc1.json").read_text())["flags"]
    assert parsed == shipped


def test_apply_writes_each_flag_at_its_config_path(launcher: ModuleType) -> None:
    base = {
        "ServerConfig": {"ipAddress": "127.0.0.1", "port": 1025, "httpsEnabled": True, "tlsCaPath": "x"},
        "BackendConfig": {"ModelDeployConfig": {"ModelConfig": [{"modelName": "old", "cpuMemSize": 5}]}},
    }
    argv = [
        "--model-weight-path", "/models/qwen", "--model-name", "qwen", "--ip-address", "0.0.0.0",
        "--port", "1025", "--world-size", "4", "--npu-device-ids", "0,1,2,3", "--max-seq-len", "16384",
        "--trust-remote-code",
    ]  # fmt: skip
    out = launcher.apply(base, launcher.parser().parse_args(argv))
    model = out["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]
    assert model == {
        "modelName": "qwen",
        "cpuMemSize": 5,
        "modelWeightPath": "/models/qwen",
        "worldSize": 4,
        "trustRemoteCode": True,
    }
    assert out["BackendConfig"]["npuDeviceIds"] == [[0, 1, 2, 3]]
    assert out["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"] == 16384
    assert out["ServerConfig"]["allowAllZeroIpListening"] is True
    assert out["ServerConfig"]["httpsEnabled"] is False
    assert out["ServerConfig"]["tlsCaPath"] == "x", "MindIE's other settings are kept"
    assert base["ServerConfig"]["ipAddress"] == "127.0.0.1", "the input is not modified"
    validate = validate_args(load_schema("mindie", "2.1.rc1"), argv, "x")
    assert validate == []


def test_unknown_launcher_flag_is_refused_before_deploy() -> None:
    issues = validate_args(load_schema("mindie", "2.1.rc1"), ["--max-seq-length", "10"], "servings[m]")
    assert [i.message for i in issues] == [
        "unknown flag --max-seq-length for mindie 2.1.rc1; did you mean --max-seq-len?"
    ]
