"""`python -m fleet` end to end on real stack files: exit codes and what users read."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from fleet import cli
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
    assert "mandatory: image-pinned: " in text and "urn:pulumi:broken::modelfleet::" in text


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


# ------------------------------------------------------------------------ output users can read


def _copy_demo(tmp_path: Path) -> Path:
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS, stacks)
    return stacks


def test_errors_are_plain_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    """Piped output (CI logs) is `error: <path>: <message>`, never markup printed as text."""
    stacks = _copy_demo(tmp_path)
    serving = stacks / "demo/servings/qwen25-7b.yaml"
    serving.write_text(serving.read_text().replace("pool: north-c500", "pool: north-c5000"))
    code, text = invoke("plan", "--stack", "demo", "--stacks-dir", str(stacks))
    assert code == 1
    assert "error: servings[qwen25-7b].placements[1].pool: unknown pool 'north-c5000'" in text
    assert "[red]" not in text and "[/]" not in text


def test_on_a_terminal_marks_are_rendered_and_user_text_is_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich markup is rendered, and text that looks like markup (`[workspace]`) is printed as is."""
    screen = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=300))
    stacks = _copy_demo(tmp_path)
    serving = stacks / "demo/servings/qwen25-7b.yaml"
    serving.write_text(serving.read_text().replace("workspace: demo", "workspace: '[workspace]'"))
    code, _ = invoke("plan", "--stack", "demo", "--stacks-dir", str(stacks))
    shown = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue())
    assert code == 1
    assert "✗ servings[qwen25-7b].workspace: '[workspace]' is not a DNS-1123 label" in shown
    assert "[red]" not in shown


def test_plan_as_json() -> None:
    code, text = invoke("plan", "--stack", "demo", "--stacks-dir", str(STACKS), "--output", "json")
    assert code == 0, text
    data = json.loads(text)
    [deepseek] = [p for p in data["placements"] if p["serving"] == "deepseek-r1"]
    assert (deepseek["layout"], deepseek["nodes"], deepseek["engine"]) == ("8x2x1", 2, "vllm 0.33.0 native")
    assert deepseek["cpu_per_pod"] == 200 and deepseek["node_shape"] == "stated"


def test_check_as_json_lists_the_errors_with_their_paths(tmp_path: Path) -> None:
    stacks = _copy_demo(tmp_path)
    serving = stacks / "demo/servings/qwen25-7b.yaml"
    serving.write_text(serving.read_text().replace("replicas: 2", "replica: 2"))
    code, text = invoke("check", "--stack", "demo", "--stacks-dir", str(stacks), "--output", "json")
    assert code == 1
    data = json.loads(text)
    assert data["ok"] is False
    assert data["errors"] == [
        {
            "path": "servings[qwen25-7b].placements[0].replica",
            "message": "unknown field 'replica'; did you mean 'replicas'?",
        }
    ]


def test_check_as_json_passes_the_demo() -> None:
    code, text = invoke(
        "check", "--stack", "demo", "--stacks-dir", str(STACKS), "--output", "json", "--no-policies"
    )
    assert code == 0, text
    data = json.loads(text)
    assert data["ok"] is True and data["schema_errors"] == [] and data["policy_pack"] is False


def test_a_yml_serving_is_read(tmp_path: Path) -> None:
    stacks = _copy_demo(tmp_path)
    serving = stacks / "demo/servings/qwen3-8b-biren.yaml"
    serving.rename(serving.with_suffix(".yml"))
    code, text = invoke("plan", "--stack", "demo", "--stacks-dir", str(stacks), "--output", "json")
    assert code == 0, text
    assert "qwen3-8b-biren" in {p["serving"] for p in json.loads(text)["placements"]}


def test_a_serving_in_another_kind_of_file_is_refused_by_name(tmp_path: Path) -> None:
    stacks = _copy_demo(tmp_path)
    serving = stacks / "demo/servings/qwen3-8b-biren.yaml"
    serving.rename(serving.with_suffix(".yaml.bak"))
    code, text = invoke("plan", "--stack", "demo", "--stacks-dir", str(stacks))
    assert code == 1
    assert "qwen3-8b-biren.yaml.bak: serving files end in .yaml (or .yml)" in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("- just\n- a list\n", "must hold a mapping with a config: section", id="list"),
        pytest.param("config: [1, 2]\n", "config must be a mapping", id="config-list"),
        pytest.param("config: {modelfleet:regions: 7}\n", "regions: must be a list", id="section-scalar"),
        pytest.param("config: {\n", "is not valid YAML", id="broken-yaml"),
        pytest.param("\x00\x01", "is not valid YAML", id="binary"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "check", "render"])
def test_no_traceback_on_a_malformed_stack_file(
    tmp_path: Path, command: str, content: str, expected: str
) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.bad.yaml").write_text(content)
    args = [command, "--stack", "bad", "--stacks-dir", str(stacks)]
    if command == "render":
        args += ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_an_invalid_image_is_refused_at_spec_time_with_its_path(tmp_path: Path) -> None:
    stacks = _copy_demo(tmp_path)
    config = stacks / "Pulumi.demo.yaml"
    config.write_text(
        config.read_text().replace(
            "biren: registry.example.com/modelfleet/vllm-supa:0.11.0-br1",
            "biren: 'registry.example.com/Modelfleet/vllm supa'",
        )
    )
    code, text = invoke("check", "--stack", "demo", "--stacks-dir", str(stacks))
    assert code == 1
    bad = "'registry.example.com/Modelfleet/vllm supa'"
    assert f"error: templates[vllm-cn-vendors].images.biren: {bad} is not an image reference" in text
    assert "Traceback" not in text


def test_an_unexpected_failure_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(stacks_dir: Path, stack: str) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(cli, "build", broken)
    result = runner.invoke(app, ["plan", "--stack", "demo", "--stacks-dir", str(STACKS)])
    assert result.exit_code == 2
    assert "error: internal error (KeyError: 'boom'); please report it" in result.output
    assert "Traceback" not in result.output


def test_rendered_yaml_writes_shared_parts_in_full_never_as_anchors() -> None:
    """Two containers of a multi-node pod may share one `resources` dict in memory."""
    from fleet.cli import _dump

    shared = {"limits": {"cpu": "8"}, "requests": {"cpu": "8"}}
    pod = {"kind": "Pod", "spec": {"containers": [{"resources": shared}, {"resources": shared}]}}
    text = _dump([pod])
    assert "&" not in text and "*" not in text
    assert list(yaml.safe_load_all(text)) == [pod]
