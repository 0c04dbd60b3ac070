"""Scenarios: one stack each, with what must happen to it (docs/ops-guide.md, "Scenarios").

Each `cases/<name>.yaml` holds a stack (`base: default` starts from `base.yaml`; `stack:` replaces
entries by name and adds others), its servings, and `expect`:

- `refused`: every issue the pipeline raises, as `{path, message}` (message: a substring; `stage`
  optionally spec, plan or render). Exactly these paths: one issue per mistake, no spurious second one.
- `planned`: the layout of each placement (`serving`, `pool` and any of `tensor`, `pipeline`, `data`,
  `nodes`, `devices_per_pod`, `args` that must appear, `absent_args` that must not), and with
  `golden: true` the whole rendering against `golden/<name>.json` (regenerate with UPDATE_GOLDEN=1).

Every rendering also passes the invariants: Guaranteed pods, accelerators requested as limited,
multi-node members carrying the pool's network. More scenarios can be run from another folder:
`MODELFLEET_TEST_SCENARIOS=/path/to/cases pytest tests/scenarios`.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.errors import IssuesError, PlanError, SpecError
from fleet.pipeline import Rendering, render_fleet
from fleet.planner import plan_fleet
from fleet.stack import build_fleet

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
FOLDERS = [
    HERE / "cases",
    *(Path(p) for p in os.environ.get("MODELFLEET_TEST_SCENARIOS", "").split(os.pathsep) if p),
]
CASES = sorted(p for folder in FOLDERS for p in folder.glob("*.yaml"))
SECTIONS = ("regions", "pools", "templates")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for section, value in over.items():
        if section in SECTIONS and isinstance(value, list):
            by_name = {item["name"]: item for item in out.get(section, [])}
            for item in value:
                by_name[item["name"]] = item
            out[section] = list(by_name.values())
        else:
            out[section] = value
    return out


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    base = yaml.safe_load((HERE / "base.yaml").read_text("utf-8")) if case.get("base") == "default" else {}
    case["config"] = _merge(base, case.get("stack") or {})
    return case


def run(case: dict[str, Any]) -> Rendering:
    servings = [(f"servings[{s.get('name')}]", s) for s in case.get("servings", [])]
    fleet = build_fleet("scenario", case["config"], servings)
    return render_fleet(fleet, plan_fleet(fleet))


STAGES = {"spec": SpecError, "plan": PlanError}


def check_refused(case: dict[str, Any], expected: list[dict[str, str]]) -> None:
    with pytest.raises(IssuesError) as caught:
        run(case)
    issues = caught.value.issues
    assert sorted(i.path for i in issues) == sorted(e["path"] for e in expected), [str(i) for i in issues]
    for e in expected:
        [issue] = [i for i in issues if i.path == e["path"]]
        assert e["message"] in issue.message, str(issue)
        stage = e.get("stage")
        if stage in STAGES:
            assert isinstance(caught.value, STAGES[stage]), type(caught.value)


def check_planned(rendering: Rendering, expected: list[dict[str, Any]]) -> None:
    by_key = {(p.plan.serving, p.plan.pool): p for p in rendering.placements}
    assert set(by_key) == {(e["serving"], e["pool"]) for e in expected}
    for e in expected:
        p = by_key[(e["serving"], e["pool"])]
        for field in ("tensor", "pipeline", "data", "nodes", "devices_per_pod"):
            if field in e:
                assert getattr(p.plan, field) == e[field], (e["serving"], field)
        for role in p.launch.roles.values():
            argv = " ".join(role.engine_args)
            if role.engine_args:
                for arg in e.get("args", []):
                    assert arg in argv, (e["serving"], arg)
                for arg in e.get("absent_args", []):
                    assert arg not in argv, (e["serving"], arg)


def pods(rendering: Rendering) -> list[tuple[Any, str, dict[str, Any], dict[str, Any]]]:
    out = []
    for p in rendering.placements:
        for obj in p.objects:
            if obj["kind"] == "Deployment":
                out.append(
                    (p, "single", obj["spec"]["template"]["metadata"], obj["spec"]["template"]["spec"])
                )
            elif obj["kind"] == "LeaderWorkerSet":
                lwt = obj["spec"]["leaderWorkerTemplate"]
                for role in ("leaderTemplate", "workerTemplate"):
                    out.append((p, role, lwt[role]["metadata"], lwt[role]["spec"]))
    return out


def check_invariants(rendering: Rendering) -> None:
    for p, role, meta, pod in pods(rendering):
        for c in pod["containers"] + pod.get("initContainers", []):
            res = c["resources"]
            for kind in ("cpu", "memory"):
                assert res["requests"][kind] == res["limits"][kind], (p.plan.serving, role, c["name"])
        engine = pod["containers"][0]
        pool = rendering.fleet.pools[p.plan.pool]
        assert engine["resources"]["limits"][pool.resource_name] == str(p.plan.devices_per_pod)
        if p.plan.multi_node:
            net = pool.spec.network
            env = {e["name"]: e.get("value") for e in engine["env"]}
            if net.interface:
                assert all(v == net.interface for k, v in env.items() if k.endswith("_SOCKET_IFNAME"))
            if net.rdma_resource:
                assert engine["resources"]["limits"][net.rdma_resource] == str(net.rdma_count)
            assert pod.get("hostNetwork", False) == net.host_network
            assert net.pod_annotations.items() <= meta.get("annotations", {}).items()


def snapshot(rendering: Rendering) -> list[dict[str, Any]]:
    return [obj for p in rendering.placements for obj in p.objects if obj["kind"] != "ConfigMap"]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_scenario(path: Path) -> None:
    case = load(path)
    expect = case["expect"]
    if "refused" in expect:
        check_refused(case, expect["refused"])
        return
    rendering = run(case)
    check_planned(rendering, expect.get("planned", []))
    check_invariants(rendering)
    if not expect.get("golden"):
        return
    golden = GOLDEN / f"{path.stem}.json"
    text = json.dumps(snapshot(rendering), indent=1, ensure_ascii=False) + "\n"
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, "utf-8")
    assert golden.is_file(), f"no golden for {path.stem}; run UPDATE_GOLDEN=1 pytest tests/scenarios"
    if json.loads(golden.read_text("utf-8")) != snapshot(rendering):
        diff = difflib.unified_diff(
            golden.read_text("utf-8").splitlines(), text.splitlines(), lineterm="", n=2
        )
        pytest.fail(
            f"{path.stem} differs from its golden (review, then UPDATE_GOLDEN=1):\n" + "\n".join(diff)
        )


def test_every_golden_belongs_to_a_scenario() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} <= {p.stem for p in CASES}
