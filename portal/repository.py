"""The local git repository of stacks: what the portal reads desired state from, and (with the git
backend) writes it to.

The repository mirrors the project layout: `<subdir>/Pulumi.<stack>.yaml`,
`<subdir>/<stack>/servings/<name>.yaml` and `<subdir>/<stack>/model-files/<model>.yaml`. One lock
guards the working tree: the worker writes and commits under it, readers build snapshots under it,
so a reader never sees half a change.
Snapshots are cached by commit, so reading a 1,000-serving stack costs one build per commit.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import Issue, IssuesError, SpecError
from fleet.incremental import StackIndex, index_stack
from fleet.loader import MODEL_FILES_DIR, load_fleet
from fleet.pipeline import Rendering, render_fleet
from fleet.stack import Fleet

SERVING_HEADER = "# Managed by the Modelfleet portal; edits here are fine, the portal reads them back.\n"
MODEL_FILES_HEADER = (
    "# Written by the Modelfleet portal for model-files request {id}: `pulumi up` runs a copy Job per\n"
    "# region, which reports to the portal. Cancel or delete the request in the portal, not here.\n"
)


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackSnapshot:
    """A stack as committed at `commit`: validated, and rendered on first use."""

    stack: str
    commit: str
    fleet: Fleet
    policy_config: dict[str, Any]

    @functools.cached_property
    def rendering(self) -> Rendering:
        return render_fleet(self.fleet)

    @functools.cached_property
    def index(self) -> StackIndex:
        """The rendering indexed by serving, pool and rule group, so preflight and preview of one
        serving cost that serving (`fleet.incremental`); built once per commit."""
        try:
            return index_stack(self.fleet, self.rendering)
        except IssuesError as exc:  # a committed stack that does not plan or render
            return StackIndex(self.fleet, None, exc)


class StackRepository:
    def __init__(
        self, root: Path, subdir: str = "stacks", author: str = "modelfleet <portal@modelfleet.local>"
    ):
        self.root = root
        self.subdir = subdir
        name, _, email = author.partition(" <")
        self._env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email.rstrip(">"),
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email.rstrip(">"),
        }
        self.lock = threading.RLock()
        self._snapshots: dict[str, StackSnapshot] = {}

    # -- git -------------------------------------------------------------------------------------

    def git(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(self.root), **self._env},
            check=False,
        )
        if check and done.returncode:
            raise GitError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def ensure(self, seed: Path | None = None) -> None:
        """Create the repository on first start, seeded with the stacks in `seed` if given."""
        with self.lock:
            if (self.root / ".git").exists():
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self.git("init", "--quiet", "--initial-branch=main")
            self.stacks_dir.mkdir(parents=True, exist_ok=True)
            if seed is not None:
                shutil.copytree(seed, self.stacks_dir, dirs_exist_ok=True)
            (self.stacks_dir / ".keep").touch()
            self.git("add", "--all")
            self.git("commit", "--quiet", "--allow-empty", "-m", "Initial stacks")

    def head(self) -> str:
        """The commit HEAD points at. Read from `.git` directly when the ref is a loose file (git
        replaces ref files atomically): every snapshot asks, and a `git` process costs ~20 ms."""
        git_dir = self.root / ".git"
        try:
            ref = (git_dir / "HEAD").read_text("ascii").strip()
            loose = git_dir / ref.removeprefix("ref: ") if ref.startswith("ref: refs/") else None
            value = loose.read_text("ascii").strip() if loose is not None and loose.is_file() else ref
            if len(value) == 40 and all(c in "0123456789abcdef" for c in value):
                return value
        except OSError:
            pass
        return self.git("rev-parse", "HEAD")  # packed refs, worktrees, anything unusual

    def pull(self) -> bool:
        """Fast-forward from `origin` when the repository has one: how pull requests merged
        elsewhere reach the copy the portal reads. False when there is no remote."""
        with self.lock:
            if "origin" not in self.git("remote").split():
                return False
            branch = self.git("rev-parse", "--abbrev-ref", "HEAD")
            self.git("pull", "--ff-only", "--quiet", "origin", branch)
            return True

    @property
    def stacks_dir(self) -> Path:
        return self.root / self.subdir

    def stacks(self) -> list[str]:
        return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in self.stacks_dir.glob("Pulumi.*.yaml"))

    def serving_file(self, stack: str, name: str) -> Path:
        return self.stacks_dir / stack / "servings" / f"{name}.yaml"

    def model_files_file(self, stack: str, name: str) -> Path:
        return self.stacks_dir / stack / MODEL_FILES_DIR / f"{name}.yaml"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self, stack: str) -> StackSnapshot:
        """The stack at HEAD; SpecError names what is wrong when the committed stack is invalid."""
        with self.lock:
            if stack not in self.stacks():
                raise SpecError(
                    [Issue("stack", f"no stack {stack!r} (have: {', '.join(self.stacks()) or 'none'})")]
                )
            commit = self.head()
            key = f"{stack}@{commit}"
            cached = self._snapshots.get(key)
            if cached is None:
                cached = StackSnapshot(stack, commit, load_fleet(self.stacks_dir, stack), self._policy(stack))
                self._snapshots = {k: v for k, v in self._snapshots.items() if not k.startswith(f"{stack}@")}
                self._snapshots[key] = cached
            return cached

    def _policy(self, stack: str) -> dict[str, Any]:
        path = self.stacks_dir / stack / "policy.json"
        return json.loads(path.read_text("utf-8")) if path.is_file() else {}

    def read_serving(self, stack: str, name: str) -> dict[str, Any] | None:
        path = self.serving_file(stack, name)
        if not path.is_file():
            return None
        data = yaml.load(path.read_text("utf-8"), Loader=yaml.CSafeLoader)
        return data if isinstance(data, dict) else None


def serving_yaml(desired: dict[str, Any]) -> str:
    """A serving file as the portal writes it: stable key order, block style, a header."""
    return SERVING_HEADER + yaml.safe_dump(
        desired, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def model_files_yaml(doc: dict[str, Any]) -> str:
    """A model-files file as the portal writes it: the header names the request it belongs to."""
    return MODEL_FILES_HEADER.format(id=doc.get("id")) + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
