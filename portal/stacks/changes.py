"""What a batch of serving requests does to a stack, worked out offline before anything is written.

Requests are applied in order to the stack's serving files (and model-files files: a
`model-files` request carries one file, or None to remove it) as plain data. The result must still
build and render with the core (`build_fleet` + `render_fleet`); when the combined change does not,
the requests are tried one at a time and only those that break the stack are refused, each with the
fields the core names. Every backend (commit, pull request, Pulumi) starts from this plan, so a
broken stack is never committed, proposed or applied.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fleet.errors import Issue, IssuesError
from fleet.loader import read_model_files, read_servings, stack_config
from fleet.manifests import Manifest
from fleet.pipeline import Rendering, render_fleet
from fleet.stack import build_fleet
from portal.repository import StackRepository, model_files_yaml, serving_yaml

Serving = dict[str, Any]
FILES_ACTION = "model-files"  # a model-files request's file (desired) or its removal (None)
FILES_PREFIX = "model-files/"  # a files request's `serving` column: `model-files/<request id>`
MAX_DIFF_CHARS = 50_000  # a pull request body holds 65,536 characters; leave room for the rest


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as a job sees it: detached from the database session."""

    id: int
    serving: str
    action: str
    desired: Serving | None
    change: dict[str, Any] | None
    actor: str
    workspace: str | None

    @property
    def files_name(self) -> str | None:
        """The model-files file this request writes or removes (None for a serving request)."""
        if self.action != FILES_ACTION:
            return None
        return str((self.change or {}).get("name", ""))

    def describe(self) -> str:
        if self.action == FILES_ACTION:
            verb = "remove model files" if self.desired is None else "model files"
            by = f"{self.actor}, workspace {self.workspace}" if self.workspace else self.actor
            return f"#{self.id} {verb} {self.files_name} ({by})"
        what = {
            "create": f"create {self.serving}",
            "delete": f"delete {self.serving}",
            "stop": f"stop {self.serving}",
            "start": f"start {self.serving}",
        }.get(self.action, f"{self.action} {self.serving}")
        if self.action in ("scale", "start") and self.change:
            what += f" (replicas {self.change.get('replicas')})"
        by = f"{self.actor}, workspace {self.workspace}" if self.workspace else self.actor
        return f"#{self.id} {what} ({by})"


class Refused(Exception):
    """A request that cannot apply: the fields at fault and why."""

    def __init__(self, fields: Sequence[tuple[str, str]]) -> None:
        self.fields = [{"field": f, "message": m} for f, m in fields]
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in fields))

    @classmethod
    def issues(cls, issues: Iterable[Issue]) -> Refused:
        return cls([(i.path, i.message) for i in issues])


def with_replicas(serving: Mapping[str, Any], replicas: Sequence[int]) -> Serving:
    """A copy of `serving` whose placements run `replicas` (one number per placement)."""
    placements = list(serving.get("placements") or [])
    if len(replicas) != len(placements):
        raise Refused([("replicas", f"{len(replicas)} value(s) given for {len(placements)} placement(s)")])
    out = copy.deepcopy(dict(serving))
    out["placements"] = [
        {**(p if isinstance(p, dict) else {}), "replicas": int(n)}
        for p, n in zip(placements, replicas, strict=True)
    ]
    return out


# The order people read a serving file in (the demo stack's); PostgreSQL's JSONB keeps no key order.
KEY_ORDER = {
    "serving": (
        "name",
        "workspace",
        "model",
        "template",
        "public_model_name",
        "max_model_len",
        "parallelism",
        "quantization",
        "dtype",
        "gpu_memory_utilization",
        "extra_args",
        "env",
        "autoscaling",
        "placements",
    ),
    "placement": ("region", "pool", "replicas", "weight", "parallelism"),
    "parallelism": ("tensor", "pipeline", "data", "nodes"),
    "model": ("uri", "params_b", "dtype", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim"),
    "autoscaling": ("min_replicas", "max_replicas", "metric", "target"),
}


def _ordered(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    order = KEY_ORDER[kind]
    rank = {key: i for i, key in enumerate(order)}
    keys = sorted(data, key=lambda k: (rank.get(k, len(order) - 1.5 if kind == "serving" else len(order)), k))
    return {k: data[k] for k in keys}


def canonical(serving: Mapping[str, Any]) -> Serving:
    """`serving` with its keys in reading order (unknown keys kept, before the placements)."""
    out = _ordered(serving, "serving")
    for key in ("parallelism", "model", "autoscaling"):
        if isinstance(out.get(key), Mapping):
            out[key] = _ordered(out[key], key)
    if isinstance(out.get("placements"), list):
        out["placements"] = [_placement(p) if isinstance(p, Mapping) else p for p in out["placements"]]
    return out


def _placement(placement: Mapping[str, Any]) -> dict[str, Any]:
    out = _ordered(placement, "placement")
    if isinstance(out.get("parallelism"), Mapping):
        out["parallelism"] = _ordered(out["parallelism"], "parallelism")
    return out


def replicas_of(serving: Mapping[str, Any]) -> list[int]:
    return [int(p.get("replicas", 1)) if isinstance(p, dict) else 1 for p in serving.get("placements") or []]


def apply_request(state: dict[str, Serving], request: RequestView) -> None:
    """Apply one request to `state` (serving name -> file content) in place, or raise Refused."""
    name = request.serving
    if request.action == "create":
        if name in state:
            raise Refused([("name", f"a serving named {name!r} already exists in the stack")])
        if request.desired is None:
            raise Refused([("", "a create request without a serving")])
        state[name] = copy.deepcopy(request.desired)
        return
    if request.action == "delete":
        state.pop(name, None)  # already gone is what was asked for
        return
    current = state.get(name)
    if current is None:
        raise Refused([("name", f"no serving named {name!r} in the stack (deleted, or not created yet)")])
    if request.action in ("scale", "stop", "start"):
        replicas = (request.change or {}).get("replicas")
        if not isinstance(replicas, list):
            raise Refused([("replicas", "missing")])
        state[name] = with_replicas(current, replicas)
    elif request.action == "update" and request.desired is not None:
        state[name] = copy.deepcopy(request.desired)
    else:
        raise Refused([("action", f"unknown action {request.action!r}")])


def apply_files(files: dict[str, Serving], request: RequestView) -> None:
    """Apply one model-files request to `files` (model name -> file content) in place."""
    name = request.files_name
    if not name:
        raise Refused([("", "a model-files request without a name")])
    if request.desired is None:
        files.pop(name, None)  # already gone is what was asked for
        return
    if request.desired.get("name") != name:
        raise Refused([("name", f"the file for {name!r} names {request.desired.get('name')!r}")])
    files[name] = copy.deepcopy(request.desired)


def build(
    stack: str,
    config: Mapping[str, Any],
    state: Mapping[str, Serving],
    files: Mapping[str, Serving] | None = None,
) -> Rendering:
    """The stack with these servings (and model files), validated and rendered; IssuesError names
    what is wrong."""
    fleet = build_fleet(
        stack,
        dict(config),
        [(f"servings[{n}]", s) for n, s in sorted(state.items())],
        [(f"model_files[{n}]", f) for n, f in sorted((files or {}).items())],
    )
    return render_fleet(fleet)


@dataclass
class ChangePlan:
    stack: str
    base_commit: str
    before: dict[str, Serving]
    after: dict[str, Serving]
    applied: list[int] = field(default_factory=list)  # request ids, in order
    refused: dict[int, Refused] = field(default_factory=dict)
    rendering: Rendering | None = None  # the stack after the change
    files_before: dict[str, Serving] = field(default_factory=dict)  # model files, by model
    files_after: dict[str, Serving] = field(default_factory=dict)

    def changed(self) -> list[str]:
        names = self.before.keys() | self.after.keys()
        return sorted(n for n in names if self.before.get(n) != self.after.get(n))

    def changed_files(self) -> list[str]:
        names = self.files_before.keys() | self.files_after.keys()
        return sorted(n for n in names if self.files_before.get(n) != self.files_after.get(n))

    def files(self, repository: StackRepository) -> dict[str, str | None]:
        """Repository-relative path -> new content, or None where the file goes away."""
        out: dict[str, str | None] = {}
        for name in self.changed():
            path = repository.relative(repository.serving_file(self.stack, name))
            serving = self.after.get(name)
            out[path] = serving_yaml(canonical(serving)) if serving is not None else None
        for name in self.changed_files():
            path = repository.relative(repository.model_files_file(self.stack, name))
            doc = self.files_after.get(name)
            out[path] = model_files_yaml(doc) if doc is not None else None
        return out


def _relevant(issues: Sequence[Issue], request: RequestView) -> list[Issue]:
    files = request.files_name
    prefix = f"model_files[{files}]" if files is not None else f"servings[{request.serving}]"
    mine = [i for i in issues if i.path.startswith(prefix)]
    return mine or list(issues)


def _apply(state: dict[str, Serving], files: dict[str, Serving], request: RequestView) -> None:
    if request.action == FILES_ACTION:
        apply_files(files, request)
    else:
        apply_request(state, request)


def plan_change(repository: StackRepository, stack: str, requests: Sequence[RequestView]) -> ChangePlan:
    """Work out the change offline from the stack files as they are now (call under the repository's
    lock); the files themselves are not touched."""
    stacks_dir = repository.stacks_dir
    config = stack_config(stacks_dir, stack)
    before = {str(raw["name"]): raw for _, raw in read_servings(stacks_dir, stack)}
    files_before = {str(raw["name"]): raw for _, raw in read_model_files(stacks_dir, stack)}
    plan = ChangePlan(stack, repository.head(), before, copy.deepcopy(before))
    plan.files_before, plan.files_after = files_before, copy.deepcopy(files_before)

    together, files_together = copy.deepcopy(before), copy.deepcopy(files_before)
    usable: list[RequestView] = []
    for request in requests:
        try:
            _apply(together, files_together, request)
            usable.append(request)
        except Refused as exc:
            plan.refused[request.id] = exc
    try:
        plan.rendering = build(stack, config, together, files_together)
        plan.after, plan.files_after = together, files_together
        plan.applied = [r.id for r in usable]
        return plan
    except IssuesError:
        pass  # find which requests break it

    state, files = copy.deepcopy(before), copy.deepcopy(files_before)
    for request in usable:
        trial, trial_files = copy.deepcopy(state), copy.deepcopy(files)
        _apply(trial, trial_files, request)
        try:
            rendering = build(stack, config, trial, trial_files)
        except IssuesError as exc:
            plan.refused[request.id] = Refused.issues(_relevant(exc.issues, request))
            continue
        state, files, plan.rendering = trial, trial_files, rendering
        plan.applied.append(request.id)
    plan.after, plan.files_after = state, files
    return plan


# -- the rendered manifest diff a reviewer reads ------------------------------------------------------


def _objects(rendering: Rendering | None) -> dict[str, Manifest]:
    if rendering is None:
        return {}
    return {
        f"{region}/{o['kind']}/{o['metadata'].get('namespace', '-')}/{o['metadata']['name']}": o
        for region, o in rendering.objects()
    }


def _dump(obj: Manifest | None) -> list[str]:
    if obj is None:
        return []
    text: str = yaml.dump(obj, Dumper=yaml.CSafeDumper, sort_keys=False, width=120)
    return text.splitlines()


def manifest_diff(before: Rendering | None, after: Rendering | None) -> str:
    """Unified diff of every Kubernetes object the change adds, removes or alters."""
    old, new = _objects(before), _objects(after)
    chunks: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        chunks += difflib.unified_diff(_dump(a), _dump(b), f"a/{key}", f"b/{key}", lineterm="")
    text = "\n".join(chunks)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + "\n… (diff truncated; run `python -m fleet diff` for all of it)"
    return text


def rendering_at_head(repository: StackRepository, stack: str) -> Rendering | None:
    """The stack as committed, rendered; None when HEAD itself does not build."""
    try:
        return repository.snapshot(stack).rendering
    except IssuesError:
        return None
