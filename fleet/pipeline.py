"""The whole offline pipeline: spec -> plan -> engine arguments -> manifests.

The same function feeds `pulumi up` (through the components), `fleet render`, the portal's preview
and the policies, so what is checked is what is applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fleet.engine_args import EngineLaunch, LaunchSetup, SetupKey, engine_launch
from fleet.errors import Issue, IssuesError, RenderError
from fleet.files_job import StackFilesJob, stack_jobs
from fleet.gcpause import collector_paused
from fleet.loader import load_fleet
from fleet.manifests import Manifest, endpoint, namespace, placement_objects
from fleet.planner import FleetPlan, PlacementPlan, plan_fleet
from fleet.spec import ModelServing
from fleet.stack import Fleet


@dataclass(frozen=True, slots=True)
class RenderedPlacement:
    plan: PlacementPlan
    launch: EngineLaunch
    objects: tuple[Manifest, ...]
    endpoint: str


@dataclass(frozen=True)
class Rendering:
    fleet: Fleet
    plan: FleetPlan
    placements: tuple[RenderedPlacement, ...]
    namespaces: dict[str, Manifest]
    warnings: tuple[Issue, ...]
    files_jobs: tuple[StackFilesJob, ...] = ()  # model files copied into cluster regions' stores

    def objects(self) -> list[tuple[str, Manifest]]:
        """(region, object) for everything, namespaces first, model-files Jobs last."""
        out = [(region, ns) for region, ns in self.namespaces.items()]
        out += [(p.plan.region, obj) for p in self.placements for obj in p.objects]
        out += [(j.region, j.manifest) for j in self.files_jobs]
        return out


# etcd's default request limit (--max-request-bytes, 1.5 MiB): a bigger object is refused by the API
# server with "etcdserver: request is too large", after everything else about it passed.
MAX_OBJECT_BYTES = 1536 * 1024
# Below this many bytes of user text (args, env) no object can come near the limit: skip measuring.
MEASURE_FROM_BYTES = 256 * 1024


def _user_bytes(fleet: Fleet, s: ModelServing) -> int:
    t = fleet.templates[s.template]
    return _text_bytes(s.extra_args, s.env) + _text_bytes(t.args, t.env)


def _text_bytes(args: tuple[str, ...], env: dict[str, str]) -> int:
    return (sum(map(len, args)) if args else 0) + (sum(map(len, env.values())) if env else 0)


def _too_large(s: ModelServing, objects: tuple[Manifest, ...]) -> list[Issue]:
    issues: list[Issue] = []
    for obj in objects:
        size = len(json.dumps(obj, separators=(",", ":")).encode())
        if size > MAX_OBJECT_BYTES:
            issues.append(
                Issue(
                    f"servings[{s.name}]",
                    f"its {obj['kind']} {obj['metadata']['name']} would be {size / 2**20:.1f} MiB, over "
                    f"the {MAX_OBJECT_BYTES / 2**20:g} MiB the API server stores per object (etcd's "
                    "request limit); move large values out of extra_args and env (a chat template or "
                    "config belongs in a file next to the weights)",
                )
            )
    return issues


@collector_paused
def render_fleet(fleet: Fleet, plan: FleetPlan | None = None) -> Rendering:
    plan = plan if plan is not None else plan_fleet(fleet)
    servings = {s.name: s for s in fleet.servings}
    warnings = list(plan.warnings)
    failed: dict[int, tuple[Issue, ...]] = {}  # by position in the plan: one batch per placement
    # Two passes, every launch and then every placement's objects: each pass keeps its own code and
    # data warm in the CPU's caches: a tenth faster at 10,000 placements than alternating them.
    setups: dict[SetupKey, LaunchSetup] = {}  # per template and pool, shared by their placements
    launched: list[tuple[int, PlacementPlan, ModelServing, EngineLaunch]] = []
    for index, placement in enumerate(plan.placements):
        s = servings[placement.serving]
        try:
            launch = engine_launch(fleet, s, placement, setups)
        except IssuesError as exc:
            failed[index] = exc.issues
            continue
        if not launch.flags_checked:
            warnings.append(
                Issue(
                    f"templates[{s.template}]",
                    "validate_flags is off: engine flags are not checked",
                )
            )
        launched.append((index, placement, s, launch))
    rendered: list[RenderedPlacement] = []
    for index, placement, s, launch in launched:
        objects = tuple(placement_objects(fleet, s, placement, launch))
        if _user_bytes(fleet, s) > MEASURE_FROM_BYTES:
            too_large = _too_large(s, objects)
            if too_large:
                failed[index] = tuple(too_large)
                continue
        rendered.append(RenderedPlacement(placement, launch, objects, endpoint(fleet, s, placement, launch)))
    if failed:
        issues: list[Issue] = []
        for index in sorted(failed):  # in plan order, each said once
            issues += [i for i in failed[index] if i not in issues]
        raise RenderError(issues)
    namespaces = {
        name: namespace(region) for name, region in fleet.regions.items() if region.runtime == "kubernetes"
    }
    return Rendering(
        fleet, plan, tuple(rendered), namespaces, tuple(dict.fromkeys(warnings)), stack_jobs(fleet)
    )


def build(stacks_dir: Path, stack: str) -> Rendering:
    return render_fleet(load_fleet(stacks_dir, stack))
