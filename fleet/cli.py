"""`python -m fleet`: render, plan, diff and check a stack offline, no cluster and no Pulumi engine."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import enum
import functools
import gc
import json
import shutil
import subprocess
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fleet import checks, kube
from fleet.errors import IssuesError
from fleet.manifests import Manifest
from fleet.pipeline import Rendering, build

P = ParamSpec("P")
Level = Literal["error", "warning", "ok"]


class Output(enum.StrEnum):
    text = "text"
    json = "json"


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Wide enough for the plan table when piped (CI logs, pull-request comments).
out = Console(width=None if Console().is_terminal else 200)
err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 200)

StackOpt = Annotated[str, typer.Option("--stack", "-s", help="stack name: stacks/Pulumi.<stack>.yaml")]
StacksDirOpt = Annotated[Path, typer.Option("--stacks-dir", help="folder holding the stack files")]
OutputOpt = Annotated[
    Output, typer.Option("--output", help="text (a table on a terminal, plain lines otherwise) or json")
]
RENDER_MARKER = ".modelfleet-render"
MARKS = {"error": "[red]✗[/]", "warning": "[yellow]![/]", "ok": "[green]✓[/]"}


def say(console: Console, level: Level, text: str) -> None:
    """One status line. On a terminal, a coloured mark and the text escaped (user text such as
    `[workspace]` is printed, never read as markup); elsewhere `level: text` on one line, for grep."""
    if console.is_terminal:
        console.print(f"{MARKS[level]} {escape(text)}", highlight=False)
    else:
        console.print(f"{level}: {text}", markup=False, highlight=False, soft_wrap=True)


def _json(data: Any) -> None:
    out.print_json(json.dumps(data), indent=2, highlight=False) if out.is_terminal else print(
        json.dumps(data)
    )


def guarded(command: Callable[P, None]) -> Callable[P, None]:
    """No traceback from any command on any input: a failure the core did not foresee is one line
    naming it (and exit 2), so a CI log shows what broke instead of 60 lines of frames."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except OSError as exc:
            say(err, "error", f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
            raise typer.Exit(1) from exc
        except Exception as exc:  # the last line of defence: named, never a traceback
            say(
                err, "error", f"internal error ({type(exc).__name__}: {exc}); please report it with the stack"
            )
            raise typer.Exit(2) from exc

    return run


def _build(stacks_dir: Path, stack: str, output: Output = Output.text) -> Rendering:
    try:
        return build(stacks_dir, stack)
    except IssuesError as exc:
        if output is Output.json:
            issues = [{"path": i.path, "message": i.message} for i in exc.issues]
            _json({"stack": stack, "ok": False, "kind": exc.kind, "errors": issues})
            raise typer.Exit(1) from exc
        if err.is_terminal:
            err.print(f"[bold red]{escape(stack)}: {len(exc.issues)} {exc.kind} error(s)[/]", highlight=False)
        else:
            err.print(f"{stack}: {len(exc.issues)} {exc.kind} error(s)", markup=False, highlight=False)
        for issue in exc.issues:
            say(err, "error", str(issue))
        raise typer.Exit(1) from exc


class _Dumper(yaml.CSafeDumper):
    """Writes every object out in full: two containers may share one `resources` dict in memory,
    and a manifest with `&id001` anchors is correct YAML but not what anyone reviews or applies."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump(objects: list[Manifest]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=120)


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
@guarded
def render(
    stack: StackOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder (replaced)")] = Path("out"),
    stacks_dir: StacksDirOpt = Path("stacks"),
) -> None:
    """Write every object, one YAML file per region and kind, plus summary.json."""
    rendering = _build(stacks_dir, stack)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not (out_dir / RENDER_MARKER).exists():
            say(err, "error", f"{out_dir} is not empty and was not written by fleet render; not touching it")
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
    say(out, "ok", f"{stack}: {count} objects in {len(files)} files under {out_dir}/")


def plan_rows(rendering: Rendering) -> list[dict[str, Any]]:
    """One row per placement: what `plan` prints, as data."""
    pools = rendering.plan.pools
    rows = []
    for p in rendering.placements:
        m, use = p.plan.memory, pools[p.plan.pool]
        rows.append(
            {
                "serving": p.plan.serving,
                "region": p.plan.region,
                "pool": p.plan.pool,
                "engine": f"{p.launch.engine} {p.launch.engine_version}"
                + (f" {p.launch.launcher}" if p.launch.launcher else ""),
                "replicas": p.plan.replicas,
                "layout": f"{p.plan.tensor}x{p.plan.pipeline}x{p.plan.data}",
                "chosen": p.plan.chosen,
                "nodes": p.plan.nodes,
                "devices_per_replica": p.plan.devices_per_replica,
                "memory_need_gib": round(m.required_gib, 1),
                "memory_have_gib": round(m.budget_gib, 1),
                "cpu_per_pod": p.plan.size.cpu,
                "memory_per_pod_gib": p.plan.size.memory_gib,
                "node_shape": "assumed" if p.plan.size.assumed else "stated",
                "pool_use": f"{use.used}/{use.capacity}",
            }
        )
    return rows


def pool_rows(rendering: Rendering) -> list[dict[str, Any]]:
    out_rows = []
    for name, use in rendering.plan.pools.items():
        facts = rendering.fleet.pools[name]
        out_rows.append(
            {
                "pool": name,
                "region": use.region,
                "accelerator": facts.spec.accelerator,
                "resource": facts.resource_name,
                "devices": use.capacity,
                "used": use.used,
                "free": use.free,
                "peak": use.peak,
            }
        )
    return out_rows


def files_rows(rendering: Rendering) -> list[dict[str, Any]]:
    """One row per model-files Job: which model's files go into which region's store, from where."""
    specs = {f.name: f for f in rendering.fleet.model_files}
    return [
        {
            "model_files": j.files,
            "region": j.region,
            "source": f"{specs[j.files].source}:{specs[j.files].repository}"
            + (f"@{specs[j.files].revision}" if specs[j.files].revision else ""),
            "job": j.manifest["metadata"]["name"],
            "request": specs[j.files].id,
        }
        for j in rendering.files_jobs
    ]


def _plain_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Tab-separated, a header line first: what `cut` and `awk` read."""
    print(title)
    if rows:
        print("\t".join(rows[0]))
        for row in rows:
            print("\t".join(str(v) for v in row.values()))


@app.command()
@guarded
def plan(stack: StackOpt, stacks_dir: StacksDirOpt = Path("stacks"), output: OutputOpt = Output.text) -> None:
    """Table of serving x placement x devices x memory fit x pool use."""
    rendering = _build(stacks_dir, stack, output)
    rows, pools, files = plan_rows(rendering), pool_rows(rendering), files_rows(rendering)
    warnings_ = [str(w) for w in rendering.warnings]
    if output is Output.json:
        _json(
            {
                "stack": stack,
                "ok": True,
                "placements": rows,
                "pools": pools,
                "model_files": files,
                "warnings": warnings_,
            }
        )
        return
    if not out.is_terminal:
        _plain_table("placements", rows)
        _plain_table("pools", pools)
        if files:
            _plain_table("model files", files)
        for warning in warnings_:
            say(out, "warning", warning)
        return
    table = Table(title=f"stack {escape(stack)}: placements", header_style="bold")
    for col in ("serving", "region/pool", "engine", "replicas", "TPxPPxDP", "nodes", "devices",
                "memory GiB (need/have)", "CPU/memory per pod", "pool use"):  # fmt: skip
        table.add_column(col, justify="right" if col in {"replicas", "nodes", "devices"} else "left")
    for r in rows:
        need, have = r["memory_need_gib"], r["memory_have_gib"]
        assumed = " (assumed)" if r["node_shape"] == "assumed" else ""
        table.add_row(
            *(
                escape(str(v))
                for v in (
                    r["serving"],
                    f"{r['region']}/{r['pool']}",
                    r["engine"],
                    r["replicas"],
                    r["layout"] + (" (auto)" if r["chosen"] == "auto" else ""),
                    r["nodes"],
                    f"{r['devices_per_replica']}/replica",
                    f"{need}/{have} ({need / have:.0%})",
                    f"{r['cpu_per_pod']} / {r['memory_per_pod_gib']} GiB{assumed}",
                    r["pool_use"],
                )
            )
        )
    out.print(table)
    pool_table = Table(title="pools", header_style="bold")
    for col in ("pool", "region", "accelerator", "resource", "devices", "used", "free", "peak (autoscaled)"):
        pool_table.add_column(col)
    for r in pools:
        pool_table.add_row(*(escape(str(v)) for v in r.values()))
    out.print(pool_table)
    if files:
        files_table = Table(title="model files (a copy Job per region)", header_style="bold")
        for col in ("model files", "region", "source", "job", "request"):
            files_table.add_column(col)
        for r in files:
            files_table.add_row(*(escape(str(v)) for v in r.values()))
        out.print(files_table)
    for warning in warnings_:
        say(out, "warning", warning)


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
@guarded
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
        out.print(f"[{colour}]{label}[/] {escape(key)}", highlight=False)
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


@contextlib.contextmanager
def _own_event_loop() -> Iterator[None]:
    """The policy pack runs the Pulumi program under mocks on an event loop, and the SDK's mock monitor
    opens one more loop in each executor thread and never closes it. Left to the interpreter's
    teardown, they printed "Exception ignored ... Invalid file descriptor" after a passing check. So
    the command owns the loop: it joins the executor's threads and collects their loops (closing
    them, quietly) while the interpreter is still whole."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
            gc.collect()


@app.command()
@guarded
def check(
    stack: StackOpt,
    stacks_dir: StacksDirOpt = Path("stacks"),
    policies: Annotated[bool, typer.Option(help="also run the policy pack under Pulumi mocks")] = True,
    output: OutputOpt = Output.text,
) -> None:
    """Spec, plan, engine flags, Kubernetes schemas and the policy pack; exit 1 on any error or
    mandatory policy violation."""
    rendering = _build(stacks_dir, stack, output)
    version = rendering.fleet.platform.kubernetes_version
    schema_errors: list[dict[str, str]] = []
    unchecked: set[str] = set()
    for region, obj in rendering.objects():
        if not kube.is_checked(obj):
            unchecked.add(f"{obj['apiVersion']} {obj['kind']}")
        for problem in kube.validate_manifest(obj, version):
            schema_errors.append(
                {"object": f"{region}/{obj['kind']}/{obj['metadata']['name']}", "message": problem}
            )
    notes = [str(w) for w in rendering.warnings]
    notes += [f"{kind}: no schema shipped, not schema-checked" for kind in sorted(unchecked)]
    found = None
    if policies:
        with _own_event_loop():
            found = _policy_violations(stacks_dir, stack)
        if found is None:
            notes.append("pulumi-policy is not installed: policy pack skipped")
    violations = sorted(found or [], key=lambda v: (v.level != "mandatory", v.policy, v.urn))
    mandatory = sum(v.level == "mandatory" for v in violations)
    objects = len(rendering.objects())
    ok = not schema_errors and not mandatory
    if output is Output.json:
        policy = [
            {"level": v.level, "policy": v.policy, "message": v.message, "urn": v.urn} for v in violations
        ]
        _json(
            {
                "stack": stack,
                "ok": ok,
                "objects": objects,
                "servings": len(rendering.fleet.servings),
                "schema_errors": schema_errors,
                "policy": policy,
                "policy_pack": found is not None,
                "warnings": notes,
            }
        )
        if not ok:
            raise typer.Exit(1)
        return
    for e in schema_errors:
        say(err, "error", f"{e['object']}: {e['message']}")
    for note in notes:
        say(out, "warning", note)
    for v in violations:
        console = err if v.level == "mandatory" else out
        if console.is_terminal:
            colour = "red" if v.level == "mandatory" else "yellow"
            console.print(
                f"  [{colour}]{v.level}[/] {escape(v.policy)}: {escape(v.message)}", highlight=False
            )
        else:
            console.print(
                f"{v.level}: {v.policy}: {v.message}", markup=False, highlight=False, soft_wrap=True
            )
        if v.urn:
            console.print(f"      {v.urn}", highlight=False, markup=False, soft_wrap=True)
    if not ok:
        say(
            err,
            "error",
            f"{stack}: {len(schema_errors)} schema error(s), {mandatory} mandatory policy violation(s) "
            f"in {objects} objects",
        )
        raise typer.Exit(1)
    pack = f", policy pack ({len(violations) - mandatory} advisory)" if found is not None else ""
    say(
        out,
        "ok",
        f"{stack}: spec, plan, engine flags, Kubernetes {version} schemas{pack} pass "
        f"({len(rendering.fleet.servings)} servings, {objects} objects)",
    )
