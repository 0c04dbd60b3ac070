"""Where a local replica lives on disk, and its state file: what a restarted portal needs to adopt the
process rather than start a second one (pid, process start time, port, launch revision).

Layout: `<data_dir>/runtime/<stack>/<serving>/<region>-<pool>/<replica>.{json,log,previous.log}`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from portal.observe.local.command import SIMULATOR


@dataclass(frozen=True, slots=True)
class PlacementKey:
    stack: str
    serving: str
    region: str
    pool: str

    def directory(self, root: Path) -> Path:
        return root / self.stack / self.serving / f"{self.region}-{self.pool}"

    def replica_name(self, index: int) -> str:
        return f"{self.serving}-{self.pool}-{index}"


@dataclass(frozen=True, slots=True)
class ReplicaFile:
    """One running (or last started) process of one replica."""

    stack: str
    serving: str
    region: str
    pool: str
    index: int
    pid: int
    started: int  # /proc start time of pid: tells our process from a reused pid
    port: int
    revision: str  # digest of the launch it runs: a changed launch replaces the process
    engine: str  # what runs: the launch's engine or "simulator"
    stands_in_for: str | None
    restarts: int

    @property
    def key(self) -> PlacementKey:
        return PlacementKey(self.stack, self.serving, self.region, self.pool)

    @property
    def simulated(self) -> bool:
        return self.engine == SIMULATOR

    def save(self, root: Path) -> None:
        path = state_path(root, self.key, self.index)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), sort_keys=True))
        os.replace(tmp, path)  # atomic: a portal killed mid-write leaves the old file or the new one


def state_path(root: Path, key: PlacementKey, index: int) -> Path:
    return key.directory(root) / f"{key.replica_name(index)}.json"


def log_path(root: Path, key: PlacementKey, index: int, *, previous: bool = False) -> Path:
    suffix = ".previous.log" if previous else ".log"
    return key.directory(root) / f"{key.replica_name(index)}{suffix}"


def load_all(root: Path) -> list[ReplicaFile]:
    """Every replica state file under `root` (unreadable ones are skipped: their process is unknown)."""
    found = []
    for path in sorted(root.glob("*/*/*/*.json")):
        try:
            found.append(ReplicaFile(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def remove(root: Path, key: PlacementKey, index: int) -> None:
    state_path(root, key, index).unlink(missing_ok=True)
