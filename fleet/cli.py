"""`python -m fleet`: render, plan, diff and check a stack offline, no cluster and no Pulumi engine."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from fleet import checks, kube
from fleet.errors import IssuesError
from fleet.manifests import Manifest
from fleet.pipeline import Rendering, build

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Wide enough for the plan table when piped (CI logs, pull-request comments).
out = Console(width=None if Console().is_terminal else 200)
err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 200)

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="stack name: stacks/Pulumi.<stack>.yaml")]
StacksDirOpt = Annotated[Path, typer.Option("--stacks-dir", help="folder holding the stack files")]
RENDER_MARKER = ".modelfleet-render"


def _build(stacks_dir: Path, stack: str) -> Rendering:
    try:
        return build(stacks_dir, stack)
    except IssuesError as exc:
        err.print(f"[bold red]{stack}: {len(exc.issues)} {exc.kind} error(s)[/]")
        for issue in exc.issues:
            err.print(f"  [red]✗[/] {issue}", highlight=False, markup=False)
        raise typer.Exit(1) from exc


def _dump(objects: list[Manifest]) -> str:
    return yaml.dump_all(objects, Dumper=yaml.CSafeDumper, sort_keys=False, width=120)


def by_file(rendering: Rendering) -> dict[str, list[Manifest]]:
    """`<region>/<kind>.yaml` -> its objects, in a stable order."""
    files: dict[str, list[Manifest]] = defaultdict(list)
    for region, obj in rendering.objects():
        files[f"{region}/{obj['kind'].lower()}.yaml"].append(obj)
    return {name: sorted(objs, key=lambda o: o["metadata"]["name"]) for name, objs in sorted(files.items())}


def summary(rendering: Rendering) -> dict[str, Any]:
    return {
        "stack": rendering.fleet.stack,
        "servings": {
            s.name: [
                {
                    "region": p.plan.region,
                    "pool": p.plan.pool,
                    "replicas": p.plan.replicas,
                    "engine": f"{p.launch.engine} {p.launch.engine_version}",
                    "image": p.launch.image,
                    "devices_per_replica": p.plan.devices_per_replica,
                    "nodes_per_replica": p.plan.nodes,
                    "endpoint": p.endpoint,
                }
                for p in rendering.placements
                if p.plan.serving == s.name
            ]
            for s in rendering.fleet.servings
        },
        "pools": {
            name: {"capacity": u.capacity, "used": u.used, "free": u.free}
            for name, u in rendering.plan.pools.items()
        },
    }


@app.command()
def render(
    stack: StackOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder (replaced)")] = Path("out"),
    stacks_dir: StacksDirOpt = Path("stacks"),
) -> None:
    """Write every object, one YAML file per region and kind, plus summary.json."""
    rendering = _build(stacks_dir, stack)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / RENDER_MARKER).exists():
            err.print(f"[red]{out_dir} is not empty and was not written by fleet render; not touching it[/]")
            raise typer.Exit(1)
        shutil.rmtree(out_dir)
    files = by_file(rendering)
    for name, objects in files.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(objects), "utf-8")
    (out_dir / RENDER_MARKER).write_text(stack + "\n", "utf-8")
    (out_dir / "summary.json").write_text(json.dumps(summary(rendering), indent=2) + "\n", "utf-8")
    count = sum(len(o) for o in files.values())
    out.print(f"[green]✓[/] {stack}: {count} objects in {len(files)} files under {out_dir}/")


@app.command()
def plan(stack: StackOpt, stacks_dir: StacksDirOpt = Path("stacks")) -> None:
    """Table of serving x placement x devices x memory fit x pool use."""
    rendering = _build(stacks_dir, stack)
    pools = rendering.plan.pools
    table = Table(title=f"stack {stack}: placements", header_style="bold")
    for col in ("serving", "region/pool", "engine", "replicas", "TPxPPxDP", "nodes", "devices",
                "memory GiB (need/have)", "pool use"):  # fmt: skip
        table.add_column(col, justify="right" if col in {"replicas", "nodes", "devices"} else "left")
    for p in rendering.placements:
        m, use = p.plan.memory, pools[p.plan.pool]
        auto = " (auto)" if p.plan.chosen == "auto" else ""
        table.add_row(
            p.plan.serving,
            f"{p.plan.region}/{p.plan.pool}",
            f"{p.launch.engine} {p.launch.engine_version}"
            + (f" {p.launch.launcher}" if p.launch.launcher else ""),
            str(p.plan.replicas),
            f"{p.plan.tensor}x{p.plan.pipeline}x{p.plan.data}{auto}",
            str(p.plan.nodes),
            f"{p.plan.devices_per_replica}/replica",
            f"{m.required_gib:.1f}/{m.budget_gib:.1f} ({m.required_gib / m.budget_gib:.0%})",
            f"{use.used}/{use.capacity}",
        )
    out.print(table)
    pool_table = Table(title="pools", header_style="bold")
    for col in ("pool", "region", "accelerator", "resource", "devices", "used", "free", "peak (autoscaled)"):
        pool_table.add_column(col)
    for name, use in pools.items():
        facts = rendering.fleet.pools[name]
        pool_table.add_row(name, use.region, facts.spec.accelerator, facts.resource_name,
                           str(use.capacity), str(use.used), str(use.free), str(use.peak))  # fmt: skip
    out.print(pool_table)
    for warning in rendering.warnings:
        out.print(f"[yellow]![/] {warning}", highlight=False, markup=False)


def _stacks_at(rev: str, repo: Path, into: Path) -> Path:
    """The stacks/ folder as it was at `rev` (rendered with today's templates and code)."""
    top = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if top.returncode:
        raise typer.BadParameter(f"{repo} is not in a git repository", param_hint="--against")
    root = Path(top.stdout.strip())
    rel = repo.resolve().relative_to(root)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "--", str(rel)], capture_output=True, check=False
    )
    if archive.returncode:
        msg = archive.stderr.decode().strip() or f"no {rel} at {rev}"
        raise typer.BadParameter(msg, param_hint="--against")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / rel


def _objects_by_key(rendering: Rendering | None) -> dict[str, Manifest]:
    if rendering is None:
        return {}
    return {
        f"{region}/{o['kind']}/{o['metadata'].get('namespace', '-')}/{o['metadata']['name']}": o
        for region, o in rendering.objects()
    }


@app.command()
def diff(
    stack: StackOpt,
    against: Annotated[str, typer.Option("--against", help="git revision to compare with")] = "HEAD",
    stacks_dir: StacksDirOpt = Path("stacks"),
    exit_code: Annotated[bool, typer.Option("--exit-code", help="exit 2 when something changes")] = False,
) -> None:
    """What would change against the stack at a git revision: objects added, removed and changed."""
    new = _build(stacks_dir, stack)
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = _stacks_at(against, stacks_dir, Path(tmp))
        old = _build(old_dir, stack) if (old_dir / f"Pulumi.{stack}.yaml").exists() else None
    before, after = _objects_by_key(old), _objects_by_key(new)
    changed = 0
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        changed += 1
        label = "added" if a is None else "removed" if b is None else "changed"
        colour = {"added": "green", "removed": "red", "changed": "yellow"}[label]
        out.print(f"[{colour}]{label}[/] {key}")
        lines = difflib.unified_diff(
            _dump([a]).splitlines() if a else [],
            _dump([b]).splitlines() if b else [],
            f"{against}:{key}",
            f"working tree:{key}",
            lineterm="",
        )
        for line in lines:
            out.print(line, highlight=False, markup=False)
    out.print(f"{changed} object(s) differ from {against}")
    if exit_code and changed:
        raise typer.Exit(2)


def _policy_violations(stacks_dir: Path, stack: str) -> list[Any] | None:
    """The policy pack over the program's resources under Pulumi mocks, or None when it is not
    installed (fleet/checks.py: the core finds the pack by entry point, never imports Pulumi)."""
    check_stack = checks.installed("policies")
    if check_stack is None:
        return None
    return check_stack(stacks_dir, stack)


@app.command()
def check(
    stack: StackOpt,
    stacks_dir: StacksDirOpt = Path("stacks"),
    policies: Annotated[bool, typer.Option(help="also run the policy pack under Pulumi mocks")] = True,
) -> None:
    """Spec, plan, engine flags, Kubernetes schemas and the policy pack; exit 1 on any error or
    mandatory policy violation."""
    rendering = _build(stacks_dir, stack)
    version = rendering.fleet.platform.kubernetes_version
    failures = 0
    unchecked: set[str] = set()
    for region, obj in rendering.objects():
        if not kube.is_checked(obj):
            unchecked.add(f"{obj['apiVersion']} {obj['kind']}")
        for problem in kube.validate_manifest(obj, version):
            failures += 1
            err.print(
                f"  [red]✗[/] {region}/{obj['kind']}/{obj['metadata']['name']}: {problem}", markup=False
            )
    for warning in rendering.warnings:
        out.print(f"[yellow]![/] {warning}", highlight=False, markup=False)
    for kind in sorted(unchecked):
        out.print(f"[yellow]![/] {kind}: no schema shipped, not schema-checked", highlight=False)
    objects = len(rendering.objects())
    mandatory = 0
    found = _policy_violations(stacks_dir, stack) if policies else None
    if policies and found is None:
        out.print("[yellow]![/] pulumi-policy is not installed: policy pack skipped")
    violations = found or []
    for v in sorted(violations, key=lambda v: (v.level != "mandatory", v.policy, v.urn)):
        mandatory += v.level == "mandatory"
        colour = "red" if v.level == "mandatory" else "yellow"
        console = err if v.level == "mandatory" else out
        console.print(f"  [{colour}]{v.level}[/] {v.policy}: {v.message}", highlight=False)
        if v.urn:
            console.print(f"      {v.urn}", highlight=False, markup=False)
    advisory = len(violations) - mandatory
    if failures or mandatory:
        err.print(
            f"[bold red]{stack}: {failures} schema error(s), {mandatory} mandatory policy violation(s) "
            f"in {objects} objects[/]"
        )
        raise typer.Exit(1)
    pack = f", policy pack ({advisory} advisory)" if found is not None else ""
    out.print(
        f"[green]✓[/] {stack}: spec, plan, engine flags, Kubernetes {version} schemas{pack} pass "
        f"({len(rendering.fleet.servings)} servings, {objects} objects)"
    )
