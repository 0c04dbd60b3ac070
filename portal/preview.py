"""Preview: what a serving change does to the Kubernetes objects, as a diff against what is deployed.

"Deployed" is the stack at HEAD, rendered (cached per commit in the snapshot's index). Only the one
serving is rendered again (`fleet.incremental.check_change`); its objects are matched with the
committed ones by `region/Kind/namespace/name` and each pair that differs gets a unified diff of
its YAML. The same preview is the body of a pull request (the pull-request backend).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from fleet.errors import IssuesError
from fleet.incremental import check_change
from fleet.manifests import Manifest
from fleet.pipeline import RenderedPlacement
from fleet.rules import pods
from fleet.rules.preflight import object_id
from portal import preflight
from portal.errors import Conflict, Invalid, NotFound
from portal.messages import msg
from portal.repository import StackSnapshot

Action = Literal["add", "remove", "change"]


@dataclass(frozen=True, slots=True)
class ObjectChange:
    id: str  # region/Kind/namespace/name
    region: str
    kind: str
    namespace: str | None
    name: str
    action: Action
    diff: str  # unified diff of the object's YAML, `a/<id>` (deployed) to `b/<id>` (proposed)


@dataclass(frozen=True)
class Preview:
    serving: str
    stack: str
    commit: str
    action: Literal["create", "update", "delete"]
    objects: tuple[ObjectChange, ...]
    unchanged: int  # objects of the serving the change leaves as they are

    @property
    def changed(self) -> bool:
        return bool(self.objects)

    @property
    def summary(self) -> str:
        counts = {a: sum(1 for o in self.objects if o.action == a) for a in ("add", "change", "remove")}
        parts = [f"{n} to {a}" for a, n in counts.items() if n]
        what = ", ".join(parts) if parts else "no changes"
        return f"{self.action} {self.serving} in {self.stack} (at {self.commit[:12]}): {what}"

    @property
    def text(self) -> str:
        """Every object's diff, one after another: a unified diff (`git apply` reads it; in Markdown,
        put it in a ```diff fence, or use `markdown`)."""
        return "".join(o.diff for o in self.objects)

    @property
    def markdown(self) -> str:
        body = self.text or "(no changes to the rendered objects)\n"
        return f"**{self.summary}**\n\n```diff\n{body}```\n"


def _yaml(obj: Manifest) -> list[str]:
    text = yaml.dump(obj, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False, width=100)
    return text.splitlines(keepends=True)


def _diff(ident: str, before: Manifest | None, after: Manifest | None) -> str:
    old = _yaml(before) if before is not None else []
    new = _yaml(after) if after is not None else []
    lines = difflib.unified_diff(
        old,
        new,
        fromfile=f"a/{ident}" if before is not None else "/dev/null",
        tofile=f"b/{ident}" if after is not None else "/dev/null",
        n=3,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _objects(placements: tuple[RenderedPlacement, ...]) -> dict[str, tuple[str, Manifest]]:
    return {object_id(p.plan.region, obj): (p.plan.region, obj) for p in placements for obj in p.objects}


def diff_objects(
    deployed: tuple[RenderedPlacement, ...], proposed: tuple[RenderedPlacement, ...]
) -> tuple[list[ObjectChange], int]:
    """The changes from `deployed` to `proposed` (removed first, then in the proposed order), and
    how many objects stay as they are."""
    before, after = _objects(deployed), _objects(proposed)
    changes: list[ObjectChange] = []
    unchanged = 0
    for ident in [*(i for i in before if i not in after), *after]:
        old, new = before.get(ident), after.get(ident)
        if old is not None and new is not None and old[1] == new[1]:
            unchanged += 1
            continue
        pair = new if new is not None else old
        assert pair is not None  # the id came from one side or the other
        region, obj = pair
        meta = pods.mapping(obj.get("metadata"))
        action: Action = "add" if old is None else "remove" if new is None else "change"
        changes.append(
            ObjectChange(
                ident,
                region,
                pods.kind(obj),
                meta.get("namespace"),
                str(meta.get("name", "")),
                action,
                _diff(ident, old[1] if old else None, new[1] if new else None),
            )
        )
    return changes, unchanged


def preview_change(snapshot: StackSnapshot, name: str, desired: dict[str, Any] | None) -> Preview:
    """The diff of creating or replacing serving `name` with `desired`, or deleting it (None).

    Raises the core's IssuesError (422, one field per issue) when the change cannot be rendered,
    NotFound when deleting a serving that does not exist, and Conflict when the committed stack
    itself does not render (there is no "deployed" to compare with)."""
    index = snapshot.index
    if index.rendering is None:
        # Not the error itself: it may name other workspaces' servings (ops see it in the stack's jobs).
        raise Conflict(
            f"stack {snapshot.stack} at {snapshot.commit[:12]} does not render; an operator must fix it"
        )
    deployed = index.rendered.get(name, ())
    exists = name in index.servings
    if desired is None:
        if not exists:
            raise NotFound(
                msg("serving {name!r} not found in stack {stack}", name=name, stack=snapshot.stack)
            )
        changes, unchanged = diff_objects(deployed, ())
        return Preview(name, snapshot.stack, snapshot.commit, "delete", tuple(changes), unchanged)
    if desired.get("name") != name:
        raise Invalid.field("name", msg("must be {name!r}, the serving being previewed", name=name))
    change = check_change(index, desired, snapshot.policy_config, rules=False)
    if change.rendered is None:
        others = preflight.others_servings(snapshot, desired.get("workspace", preflight.DEFAULT_WORKSPACE))
        raise preflight.private_error(change.error or IssuesError([]), change, others)
    changes, unchanged = diff_objects(deployed, change.rendered)
    action: Literal["create", "update"] = "update" if exists else "create"
    return Preview(name, snapshot.stack, snapshot.commit, action, tuple(changes), unchanged)
