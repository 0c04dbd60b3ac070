"""A real portal process (`python -m portal`) over a stack whose only region is this machine (`local`,
the simulator standing in for vLLM): what the deploy-to-answer test and benchmark drive."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from sqlalchemy import Engine, select
from sqlalchemy.orm import selectinload

from benchmarks.processes import free_port, wait_until_up
from portal.repository import StackRepository
from store.db import make_engine, session_factory
from store.models import ServingPlacement
from store.security import USER_TOKEN_PREFIX, issue

ROOT = Path(__file__).resolve().parents[1]
STACK = "lab"
T = TypeVar("T")


def seed_stack(where: Path, devices: int = 4) -> Path:
    """The demo stack's local region, its pool (with `devices` devices) and templates: nothing else."""
    demo = yaml.safe_load((ROOT / "stacks" / "Pulumi.demo.yaml").read_text())
    config = demo["config"]
    config["modelfleet:regions"] = [r for r in config["modelfleet:regions"] if r.get("runtime") == "local"]
    pools = [p for p in config["modelfleet:pools"] if p["region"] == "local"]
    for pool in pools:
        pool["devices_per_node"] = devices
    config["modelfleet:pools"] = pools
    seed = where / "seed"
    (seed / STACK / "servings").mkdir(parents=True)
    (seed / STACK / "servings" / ".keep").write_text("")
    (seed / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    return seed


def seed_demo(where: Path, devices: int = 6) -> Path:
    """The whole demo stack with room on its local pool (`devices`) for what a test deploys there."""
    seed = where / "demo-seed"
    shutil.copytree(ROOT / "stacks", seed)
    path = seed / "Pulumi.demo.yaml"
    demo = yaml.safe_load(path.read_text())
    for pool in demo["config"]["modelfleet:pools"]:
        if pool["region"] == "local":
            pool["devices_per_node"] = devices
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    return seed


@dataclass
class Portal:
    url: str
    admin: str
    data_dir: Path
    engine: Engine
    process: subprocess.Popen[bytes] | None = None
    closing: list[Callable[[], None]] = field(default_factory=list)  # clients a test opened
    demo: bool = False

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        assert answer.status_code < 300, (path, answer.status_code, answer.text)
        out: dict[str, Any] = answer.json()
        return out

    def placements(self, serving: str) -> list[ServingPlacement]:
        with session_factory(self.engine)() as session:
            query = select(ServingPlacement).options(selectinload(ServingPlacement.replicas))
            return list(session.scalars(query.where(ServingPlacement.serving == serving)))

    def start(self) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MODELFLEET_DATA_DIR=str(self.data_dir),
            MODELFLEET_ADMIN_TOKEN=self.admin,
            MODELFLEET_PEPPER="e2e-pepper",
            MODELFLEET_LOCAL_RUNTIME_ENABLED="true",
            MODELFLEET_WORKER_POLL_SECONDS="0.1",
        )
        command = [sys.executable, "-m", "portal", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--demo"] if self.demo else []
        with (self.data_dir / "portal.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until_up(f"{self.url}/healthz", self.process, "portal")

    def kill(self) -> None:
        """SIGKILL: no chance to stop anything it started."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def engine_pids(portal: Portal) -> set[int]:
    pids = set()
    with session_factory(portal.engine)() as session:
        for placement in session.scalars(
            select(ServingPlacement).options(selectinload(ServingPlacement.replicas))
        ):
            pids |= {int(r.details["pid"]) for r in placement.replicas if r.details.get("pid")}
    return pids


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def until(check: Callable[[], T | None], what: str, seconds: float = 60) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


@contextmanager
def local_portal(tmp: Path, *, demo: bool = False) -> Iterator[Portal]:
    """A portal on this machine's `lab` stack (its local region alone), or with `demo` the whole demo
    (plaza, templates, users; its local pool with room to deploy)."""
    data = tmp / "var"
    StackRepository(data / "stacks-repo").ensure(seed_demo(tmp) if demo else seed_stack(tmp))
    portal = Portal(
        f"http://127.0.0.1:{free_port()}",
        issue(USER_TOKEN_PREFIX).value,
        data,
        make_engine(f"sqlite:///{data / 'modelfleet.db'}"),
        demo=demo,
    )
    try:
        portal.start()
        yield portal
    finally:
        for close in portal.closing:
            close()
        if portal.process is not None and portal.process.poll() is None:
            portal.process.terminate()
            portal.process.wait(20)
        for pid in engine_pids(portal):  # the engines outlive the portal by design: end them here
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        portal.engine.dispose()
