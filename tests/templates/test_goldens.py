"""Golden files: what each engine x vendor x case renders, down to every argv item and manifest field.

A golden changes only on purpose: regenerate with `UPDATE_GOLDEN=1 pytest tests/templates` and review
the diff. A missing golden fails (it is never created silently). What no golden update may change is
checked in `test_invariants.py`.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from fleet.pipeline import Rendering
from tests.templates.cases import BY_ID, CASE_IDS, rendering

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden_path(case_id: str) -> Path:
    return GOLDEN / f"{case_id}.json"


def _normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as rendered, except launcher scripts (pinned by their own tests) shown by size."""
    out = copy.deepcopy(obj)
    if out.get("kind") == "ConfigMap":
        out["data"] = {key: f"<{len(value.encode())} bytes>" for key, value in out["data"].items()}
    return out


def snapshot(case_id: str, r: Rendering) -> dict[str, Any]:
    case = BY_ID[case_id]
    return {
        "case": case_id,
        "hardware": case.hardware.id,
        "placements": [
            {
                "serving": p.plan.serving,
                "pool": p.plan.pool,
                "plan": {
                    "tensor": p.plan.tensor,
                    "pipeline": p.plan.pipeline,
                    "data": p.plan.data,
                    "nodes": p.plan.nodes,
                    "devices_per_pod": p.plan.devices_per_pod,
                },
                "launcher": p.launch.launcher,
                "image": p.launch.image,
                "roles": {
                    role: {"command": list(cmd.command), "args": list(cmd.args)}
                    for role, cmd in p.launch.roles.items()
                },
                "endpoint": p.endpoint,
                "objects": [_normalized(obj) for obj in p.objects],
            }
            for p in r.placements
        ],
    }


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_rendering_matches_golden(case_id: str) -> None:
    path = golden_path(case_id)
    actual = snapshot(case_id, rendering(case_id))
    text = json.dumps(actual, indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    assert path.is_file(), f"no golden {path.relative_to(GOLDEN)}; run UPDATE_GOLDEN=1 pytest tests/templates"
    golden = path.read_text("utf-8")
    if json.loads(golden) != actual:
        diff = difflib.unified_diff(
            golden.splitlines(), text.splitlines(), "golden", "rendered", n=2, lineterm=""
        )
        pytest.fail(f"{case_id} differs from its golden (review, then UPDATE_GOLDEN=1):\n" + "\n".join(diff))


def test_every_golden_belongs_to_a_case() -> None:
    """A golden whose case was removed or renamed would pin nothing: it must go too."""
    on_disk = {p.relative_to(GOLDEN).with_suffix("").as_posix() for p in GOLDEN.rglob("*.json")}
    assert on_disk <= set(CASE_IDS), sorted(on_disk - set(CASE_IDS))


def test_case_ids_are_unique() -> None:
    assert len(CASE_IDS) == len(set(CASE_IDS))
