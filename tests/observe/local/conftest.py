"""Local runtime fixtures: a portal over the demo stack (its `local` region publishes the
`qwen25-7b-local` placement) on SQLite, a supervisor with short back-offs, and cleanup of every engine
process a test started, even when it fails."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portal.app import build_services
from portal.observe.local import process
from portal.observe.local.leases import Leases
from portal.observe.local.logs import runtime_root
from portal.observe.local.replica import load_all
from portal.observe.local.supervisor import Backoff, Supervisor
from portal.repository import StackRepository
from portal.services import Services
from portal.settings import Settings
from store.db import transaction
from store.models import ServingPlacement

PROJECT_STACKS = Path(__file__).resolve().parents[3] / "stacks"
SERVING = "qwen25-7b-local"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    repo = tmp_path / "stacks-repo"
    base = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
        local_runtime_enabled=False,  # tests drive the supervisor themselves
    )
    StackRepository(repo, base.stacks_subdir, base.git_author).ensure(seed=PROJECT_STACKS)
    return base.model_copy(update={"stacks_repo": repo})


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    yield services
    services.engine.dispose()


@pytest.fixture
def make_supervisor(services: Services) -> Iterator[Callable[[], Supervisor]]:
    """New supervisors over the same runtime directory (a restarted portal is a new one)."""
    root = runtime_root(services.settings.data_dir)
    made: list[Supervisor] = []

    def make() -> Supervisor:
        s = Supervisor(
            services.sessions, root, Leases(services.engine), backoff=Backoff(0.2, 0.8), stop_grace=2
        )
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop_all(grace=1)
        for left in load_all(root) if root.exists() else []:  # adopted by nobody: kill by group
            process.signal_group(left.pid, left.started, signal.SIGKILL)
            process.reap(left.pid)


@pytest.fixture
def supervisor(make_supervisor: Callable[[], Supervisor]) -> Supervisor:
    return make_supervisor()


@dataclass(frozen=True)
class Seen:
    state: str
    ready: int
    reason: str | None
    message: str | None
    replicas: list[dict[str, Any]]


def observed(services: Services, serving: str = SERVING) -> Seen:
    with services.sessions() as session:
        p = session.scalars(select(ServingPlacement).where(ServingPlacement.serving == serving)).one()
        replicas = [
            {
                "name": r.name,
                "state": r.state,
                "reason": r.reason,
                "message": r.message,
                "url": r.url,
                "restarts": r.restarts,
                "exit_code": r.exit_code,
                "details": dict(r.details),
            }
            for r in p.replicas
        ]
        return Seen(p.state, p.ready_replicas, p.reason, p.message, replicas)


def change(services: Services, serving: str = SERVING, **fields: Any) -> None:
    """Change the published row as a new commit would (desired replicas, launch)."""
    with transaction(services.sessions) as session:
        p = session.scalars(select(ServingPlacement).where(ServingPlacement.serving == serving)).one()
        for name, value in fields.items():
            setattr(p, name, value)


def launch_of(services: Services, serving: str = SERVING) -> dict[str, Any]:
    with services.sessions() as session:
        p = session.scalars(select(ServingPlacement).where(ServingPlacement.serving == serving)).one()
        return dict(p.launch)


def until(
    supervisor: Supervisor, services: Services, check: Callable[[Seen], bool], timeout: float = 15
) -> Seen:
    """Run passes until `check` holds for what was recorded (fails with the last observation)."""
    deadline = time.monotonic() + timeout
    while True:
        supervisor.run_once()
        seen = observed(services)
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s; last seen: {seen}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    started = process.start_time(pid)
    return started is not None and process.alive(pid, started)


def pids(seen: Seen) -> list[int]:
    return [r["details"]["pid"] for r in seen.replicas]


def group_of(pid: int) -> int:
    return os.getpgid(pid)
