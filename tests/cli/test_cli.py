"""`python -m fleet` end to end on real stack files: exit codes and what users read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fleet.cli import app

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
BROKEN = ROOT / "tests/policies/fixtures/stacks"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_plan_prints_every_placement_and_pool() -> None:
    code, text = invoke("plan", "--stack", "demo", "--stacks-dir", str(STACKS))
    assert code == 0, text
    assert "deepseek-r1" in text and "8x2x1" in text and "vllm 0.33.0 native" in text
    assert "south-910b" in text and "huawei.com/ascend-1980" in text


def test_render_writes_one_file_per_region_and_kind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = invoke("render", "--stack", "demo", "--stacks-dir", str(STACKS), "--out", str(out))
    assert code == 0, text
    lws = list(yaml.safe_load_all((out / "cn-east/leaderworkerset.yaml").read_text()))
    assert [o["metadata"]["name"] for o in lws] == ["deepseek-r1-east-h100"]
    assert (out / "cn-south/configmap.yaml").exists(), "the MindIE launcher ships in a ConfigMap"
    assert "qwen25-7b" in (out / "summary.json").read_text()
    # rendering again replaces its own output...
    assert invoke("render", "--stack", "demo", "--stacks-dir", str(STACKS), "--out", str(out))[0] == 0


def test_render_never_overwrites_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _ = invoke("render", "--stack", "demo", "--stacks-dir", str(STACKS), "--out", str(tmp_path))
    assert code == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_spec_errors_exit_1_and_name_the_path(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS, stacks)
    serving = stacks / "demo/servings/qwen25-7b.yaml"
    serving.write_text(serving.read_text().replace("pool: north-c500", "pool: north-c5000"))
    code, text = invoke("check", "--stack", "demo", "--stacks-dir", str(stacks))
    assert code == 1
    assert "servings[qwen25-7b].placements[1].pool: unknown pool 'north-c5000'" in text


def test_check_passes_the_demo_with_the_policy_pack() -> None:
    code, text = invoke("check", "--stack", "demo", "--stacks-dir", str(STACKS))
    assert code == 0, text
    assert "policy pack" in text and "mandatory" not in text


def test_check_fails_on_mandatory_policy_violations() -> None:
    code, text = invoke("check", "--stack", "broken", "--stacks-dir", str(BROKEN))
    assert code == 1
    assert "mandatory image-pinned" in text and "urn:pulumi:broken::modelfleet::" in text


def test_diff_against_a_git_revision(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS, stacks)
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    assert invoke("diff", "--stack", "demo", "--stacks-dir", str(stacks), "--exit-code")[0] == 0
    serving = stacks / "demo/servings/qwen3-8b-biren.yaml"
    serving.write_text(serving.read_text().replace("replicas: 1", "replicas: 2"))
    code, text = invoke("diff", "--stack", "demo", "--stacks-dir", str(stacks), "--exit-code")
    assert code == 2
    assert "changed cn-north/Deployment/modelfleet/qwen3-8b-biren-north-br166" in text
    assert "\n-  replicas: 1\n+  replicas: 2\n" in text
    assert "1 object(s) differ from HEAD" in text


def test_the_core_never_imports_pulumi() -> None:
    probe = (
        "import sys, fleet.pipeline, fleet.rules, fleet.kube, fleet.cli; "
        "roots = {'pulumi', 'pulumi_kubernetes', 'pulumi_policy'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["plan", "render", "check", "diff"])
def test_unknown_stack_lists_the_known_ones(command: str, tmp_path: Path) -> None:
    args = [command, "--stack", "nope", "--stacks-dir", str(STACKS)]
    if command == "render":
        args += ["--out", str(tmp_path / "o")]
    code, text = invoke(*args)
    assert code == 1
    assert "no stack 'nope'" in text and "demo" in text


def test_check_without_the_pack_does_not_claim_it_ran() -> None:
    code, text = invoke("check", "--stack", "demo", "--stacks-dir", str(STACKS), "--no-policies")
    assert code == 0, text
    assert "policy pack" not in text
