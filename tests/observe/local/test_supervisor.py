"""The local runtime with the real engine simulator as the engine process (no mocks): starting,
readiness, scaling, crash loops with back-off, replacing a changed launch, adoption by a restarted
portal, deletion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import delete

from portal.observe.local.logs import replica_log
from portal.observe.local.supervisor import Supervisor
from portal.services import Services
from store.db import transaction
from store.models import ServingPlacement
from tests.observe.local.conftest import SERVING, alive, change, launch_of, observed, pids, until


def ready(n: int) -> Callable[..., bool]:
    return lambda seen: seen.state == "ready" and seen.ready == n and len(seen.replicas) == n


def test_a_replica_starts_loads_and_answers_as_the_simulator_standing_in(
    services: Services, supervisor: Supervisor
) -> None:
    launch = launch_of(services)
    assert launch["engines"] == "simulate" and launch["engine"] == "vllm"
    change(services, desired_replicas=1, launch={**launch, "env": {"SIMULATOR_LOAD_SECONDS": "0.4"}})

    loading = until(supervisor, services, lambda s: s.state == "loading")
    [replica] = loading.replicas
    port = replica["details"]["port"]
    assert replica["url"] is None
    assert f"waiting for GET http://127.0.0.1:{port}/health to answer" in replica["message"]
    assert "engine simulator (standing in for vllm" in replica["message"]

    seen = until(supervisor, services, ready(1))
    [replica] = seen.replicas
    assert replica["url"] == f"http://127.0.0.1:{port}"
    assert replica["details"]["engine"] == "simulator" and replica["details"]["stands_in_for"] == "vllm"
    models = httpx.get(f"{replica['url']}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["qwen2.5-7b-instruct-local"]
    pid = replica["details"]["pid"]
    assert os.getpgid(pid) == pid != os.getpgid(0)  # its own process group, not the portal's

    log = replica_log(services.settings.data_dir, "demo", SERVING, "local", "local-gpu", replica["name"])
    first, command, *rest = log.read_text().splitlines()
    assert "the engine SIMULATOR stands in for vllm" in first and f"port {port}" in first
    assert command.startswith("[modelfleet] $ ") and f"--port {port}" in command
    assert any("modelfleet engine SIMULATOR standing in for vllm" in line for line in rest)


def test_scaling_up_down_and_to_zero(services: Services, supervisor: Supervisor) -> None:
    change(services, desired_replicas=2)
    seen = until(supervisor, services, ready(2))
    first, second = pids(seen)
    ports = {r["details"]["port"] for r in seen.replicas}
    assert len(ports) == 2 and all(alive(p) for p in (first, second))
    for r in seen.replicas:
        assert httpx.get(f"{r['url']}/health").status_code == 200

    change(services, desired_replicas=1)  # the highest-numbered replica goes
    seen = until(supervisor, services, lambda s: len(s.replicas) == 1 and s.state == "ready")
    assert pids(seen) == [first] and seen.replicas[0]["name"].endswith("-0")
    assert not alive(second)

    change(services, desired_replicas=0)
    seen = until(supervisor, services, lambda s: s.state == "stopped" and not s.replicas)
    assert seen.reason == "Stopped" and not alive(first)


def test_a_crashing_engine_is_failed_with_its_exit_code_and_last_lines_and_restarted_with_back_off(
    services: Services, supervisor: Supervisor
) -> None:
    launch = launch_of(services)
    change(services, desired_replicas=1, launch={**launch, "env": {"SIMULATOR_EXIT_AT_START": "3"}})
    seen = until(supervisor, services, lambda s: s.state == "failed")
    [replica] = seen.replicas
    assert replica["state"] == "failed" and replica["reason"] == "CrashLoopBackOff"
    assert replica["exit_code"] == 3
    assert "exited (exit code 3)" in replica["message"] and "back-off 0.2 s" in replica["message"]
    assert "simulated start failure: exiting with code 3" in replica["message"]  # its last log lines
    assert seen.reason == "CrashLoopBackOff"

    seen = until(supervisor, services, lambda s: s.replicas[0]["restarts"] >= 3)
    assert "back-off 0.8 s" in seen.replicas[0]["message"]  # doubled each time, up to the limit
    previous = replica_log(
        services.settings.data_dir, "demo", SERVING, "local", "local-gpu", replica["name"], previous=True
    )
    assert "exiting with code 3" in previous.read_text()

    change(services, launch=launch)  # a fixed launch: the next start answers
    seen = until(supervisor, services, ready(1))
    assert seen.replicas[0]["exit_code"] is None and seen.replicas[0]["restarts"] >= 3


def test_a_changed_launch_replaces_the_process(services: Services, supervisor: Supervisor) -> None:
    change(services, desired_replicas=1)
    [before] = pids(until(supervisor, services, ready(1)))
    launch = launch_of(services)
    change(services, launch={**launch, "env": {"SOME_SETTING": "2"}})
    seen = until(supervisor, services, lambda s: s.state == "ready" and pids(s) != [before])
    assert not alive(before) and alive(pids(seen)[0])


PORTAL = """
import sys, time
from pathlib import Path
from portal.observe.local.leases import Leases
from portal.observe.local.supervisor import Supervisor
from store.db import make_engine, session_factory
engine = make_engine(sys.argv[1])
supervisor = Supervisor(session_factory(engine), Path(sys.argv[2]), Leases(engine))
while True:
    supervisor.run_once()
    time.sleep(0.05)
"""


def test_a_portal_restarted_after_sigkill_adopts_its_engines_without_starting_them_twice(
    services: Services, make_supervisor: Callable[[], Supervisor]
) -> None:
    root = Path(__file__).resolve().parents[3]
    data = services.settings.data_dir
    change(services, desired_replicas=2)
    url = services.settings.resolved_database_url
    portal = subprocess.Popen([sys.executable, "-c", PORTAL, url, str(data / "runtime")], cwd=root)
    try:
        deadline = time.monotonic() + 20
        while not ready(2)(seen := observed(services)):
            assert portal.poll() is None and time.monotonic() < deadline, seen
            time.sleep(0.05)
        before = pids(seen)
    finally:
        portal.kill()  # SIGKILL: no chance to stop anything
        portal.wait()
    assert all(alive(p) for p in before)

    restarted = make_supervisor()
    seen = until(restarted, services, ready(2))
    assert pids(seen) == before
    for r in seen.replicas:
        log = replica_log(data, "demo", SERVING, "local", "local-gpu", r["name"]).read_text()
        assert log.count("[modelfleet] $ ") == 1  # started once
        assert r["restarts"] == 0

    os.kill(before[1], signal.SIGKILL)  # an adopted engine dies: noticed and started again
    seen = until(restarted, services, lambda s: s.replicas[1]["restarts"] == 1 and s.state == "ready")
    assert pids(seen)[0] == before[0] and pids(seen)[1] != before[1]


def test_deleting_the_placement_stops_its_processes(services: Services, supervisor: Supervisor) -> None:
    change(services, desired_replicas=2)
    running = pids(until(supervisor, services, ready(2)))
    with transaction(services.sessions) as session:
        session.execute(delete(ServingPlacement).where(ServingPlacement.serving == SERVING))
    deadline = time.monotonic() + 10
    while supervisor.replicas and time.monotonic() < deadline:
        supervisor.run_once()
        time.sleep(0.05)
    assert not supervisor.replicas
    assert not any(alive(p) for p in running)
    directory = Path(services.settings.data_dir) / "runtime" / "demo" / SERVING / "local-local-gpu"
    assert not list(directory.glob("*.json"))  # no state left to adopt


def test_an_engine_that_is_not_installed_fails_with_what_to_do(
    services: Services, supervisor: Supervisor
) -> None:
    launch = launch_of(services)
    change(
        services, desired_replicas=1, launch={**launch, "engines": "installed", "command": ["no-such-vllm"]}
    )
    seen = until(supervisor, services, lambda s: s.state == "failed")
    [replica] = seen.replicas
    assert replica["reason"] == "EngineNotInstalled"
    assert "'no-such-vllm' is not on the portal's PATH" in replica["message"]
    assert "local.engines to simulate" in replica["message"]


def test_an_installed_engine_runs_its_own_argv_on_a_port_of_its_own(
    services: Services, supervisor: Supervisor
) -> None:
    """The real-program path, with a program that is installed here: the simulator run as itself."""
    root = str(Path(__file__).resolve().parents[3])
    launch = {
        **launch_of(services),
        "engine": "custom",
        "engines": "installed",
        "command": [sys.executable, "-m", "simulator"],
        "args": ["--host", "0.0.0.0", "--port", "8000", "--model", "own-argv"],
        "env": {"PYTHONPATH": root},
    }
    change(services, desired_replicas=1, launch=launch)
    seen = until(supervisor, services, ready(1))
    [replica] = seen.replicas
    assert replica["details"]["engine"] == "custom" and "stands_in_for" not in replica["details"]
    assert replica["details"]["port"] != 8000
    assert httpx.get(f"{replica['url']}/v1/models").json()["data"][0]["id"] == "own-argv"
