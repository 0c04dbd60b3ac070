"""Observed state through the API: status, replicas, history, the status stream and replicas' logs,
from rows written the one way runtimes write them (`portal.observe.recorder.record`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from portal.api import observed as observed_api
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.settings import Settings
from store.models import ServingPlacement
from tests.portal.helpers import as_user, make_member
from tests.portal.stackops_support import parse_sse, workspaces

BASE = "/api/workspaces/demo/servings/qwen25-7b"


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings


def observe(services: Services, pool: str, *replicas: ReplicaObservation, runtime: str | None = None) -> None:
    """Report `replicas` of qwen25-7b's placement on `pool`, as a runtime would."""
    with services.sessions() as session, session.begin():
        placement = session.scalar(
            select(ServingPlacement).where(
                ServingPlacement.serving == "qwen25-7b", ServingPlacement.pool == pool
            )
        )
        assert placement is not None
        if runtime is not None:  # published from git; set here as a stack declaring it would
            placement.runtime = runtime
        record(session, placement, replicas)


def following(path: Path) -> bool:
    """Whether this process has `path` open (the log follower does, once it follows)."""
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir() if fd.is_symlink())


def ready(name: str, **more: Any) -> ReplicaObservation:
    return ReplicaObservation(name, State.READY, url=f"http://127.0.0.1:9/{name}", **more)


@pytest.fixture
def demo(client: TestClient) -> TestClient:
    workspaces(client, "demo")
    return client


def test_nothing_observed_is_committed_not_running(demo: TestClient) -> None:
    status = demo.get(f"{BASE}/status").json()
    assert (status["state"], status["badge"], status["ready"], status["desired"]) == (
        "committed",
        "committed",
        0,
        3,
    )
    assert [(p["pool"], p["state"], p["observed_at"]) for p in status["placements"]] == [
        ("east-h100", "committed", None),
        ("north-c500", "committed", None),
    ]
    serving = demo.get(BASE).json()
    assert (serving["state"], serving["badge"]) == ("committed", "committed")  # was "active"


def test_status_replicas_and_history_follow_what_was_recorded(demo: TestClient, services: Services) -> None:
    observe(
        services,
        "east-h100",
        ready("east-0", details={"node": "gpu-1", "pid": 42, "log": "/x"}),
        ready("east-1"),
    )
    observe(
        services,
        "north-c500",
        ReplicaObservation("north-0", State.LOADING, reason="Loading", message="weights 40%"),
    )
    status = demo.get(f"{BASE}/status").json()
    assert (status["state"], status["badge"], status["ready"]) == ("degraded", "degraded", 2)
    assert [(p["pool"], p["state"], p["ready"], p["desired"]) for p in status["placements"]] == [
        ("east-h100", "ready", 2, 2),
        ("north-c500", "loading", 0, 1),
    ]
    assert status["message"] == "weights 40%"
    listed = demo.get("/api/workspaces/demo/servings").json()["items"]
    assert {s["name"]: s["badge"] for s in listed}["qwen25-7b"] == "degraded"

    replicas = demo.get(f"{BASE}/replicas").json()["items"]
    assert [(r["name"], r["state"]) for r in replicas] == [
        ("east-0", "ready"),
        ("east-1", "ready"),
        ("north-0", "loading"),
    ]
    assert replicas[0]["details"] == {"node": "gpu-1"}  # no process ids nor paths of the control plane

    observe(
        services,
        "north-c500",
        ReplicaObservation("north-0", State.FAILED, reason="OOMKilled", message="out of memory"),
    )
    status = demo.get(f"{BASE}/status").json()
    assert (status["state"], status["reason"]) == ("degraded", "OOMKilled")
    events = demo.get(f"{BASE}/events", params={"page_size": 2}).json()
    assert events["total"] >= 6  # two committed placements, three replicas, two placement transitions …
    assert [(e["replica"], e["state"], e["reason"]) for e in events["items"]] == [
        (None, "failed", "OOMKilled"),
        ("north-0", "failed", "OOMKilled"),
    ]
    second = demo.get(f"{BASE}/events", params={"page_size": 2, "page": 2}).json()["items"]
    assert second[0]["id"] < events["items"][-1]["id"]


def test_failed_everywhere_is_failed_with_its_reason(demo: TestClient, services: Services) -> None:
    crash = ReplicaObservation(
        "east-0", State.FAILED, reason="CrashLoopBackOff", message="exit 1", restarts=3
    )
    observe(services, "east-h100", crash)
    observe(services, "north-c500", ReplicaObservation("north-0", State.PULLING, reason="Pulling"))
    status = demo.get(f"{BASE}/status").json()
    assert (status["state"], status["reason"], status["message"]) == ("failed", "CrashLoopBackOff", "exit 1")
    assert status["placements"][0]["restarts"] == 3


def test_another_workspace_gets_404_never_the_serving(demo: TestClient, services: Services) -> None:
    workspaces(demo, "team-b")
    observe(services, "east-h100", ready("east-0"))
    token = make_member(demo, "bob", "team-b", "admin")
    with as_user(demo, token):
        for path in ("/status", "/replicas", "/events", "/logs", "/status:stream"):
            mine = demo.get(f"/api/workspaces/team-b/servings/qwen25-7b{path}")
            assert mine.status_code == 404, (path, mine.text)
            theirs = demo.get(f"{BASE}{path}")
            assert theirs.status_code == 404, (path, theirs.text)
    assert demo.get("/api/workspaces/demo/servings/nope/status").status_code == 404


def test_the_stream_sends_the_state_then_each_new_transition(
    demo: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    observe(services, "east-h100", ReplicaObservation("east-0", State.LOADING))
    streaming = threading.Event()
    where_it_starts = observed_api._last_event_id

    def noted(*args: Any) -> int:
        last = where_it_starts(*args)
        streaming.set()
        return last

    monkeypatch.setattr(observed_api, "_last_event_id", noted)

    def later_on() -> None:  # a transition once the stream runs
        assert streaming.wait(10)
        time.sleep(0.3)
        observe(services, "east-h100", ready("east-0"), ready("east-1"))

    later = threading.Thread(target=later_on)
    later.start()
    started = time.monotonic()
    try:
        response = demo.get(f"{BASE}/status:stream", params={"max_seconds": 2})
    finally:
        later.join()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert time.monotonic() - started < 8
    events = parse_sse(response.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and events[0]["data"]["placements"][0]["state"] == "loading"
    transitions = [e["data"] for e in events if e["event"] == "transition"]
    assert {(t["replica"], t["state"]) for t in transitions} == {
        ("east-0", "ready"),
        ("east-1", "ready"),
        (None, "ready"),
    }
    assert [e["data"]["placements"][0]["state"] for e in events if e["event"] == "status"][-1] == "ready"
    assert kinds[-1] == "end"
    resumed = demo.get(
        f"{BASE}/status:stream",
        params={"max_seconds": 0.6},
        headers={"Last-Event-ID": str(transitions[0]["id"] - 1)},
    )
    again = [e["data"]["id"] for e in parse_sse(resumed.text) if e["event"] == "transition"]
    assert again == [t["id"] for t in transitions]


def test_logs_of_a_local_replica_tail_previous_and_missing(
    demo: TestClient, services: Services, tmp_path: Path
) -> None:
    log, before = tmp_path / "east-0.log", tmp_path / "east-0.previous.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 1001)))
    before.write_text("starting\nTraceback: boom\n")
    details = {"log": str(log), "previous_log": str(before)}
    observe(
        services,
        "east-h100",
        ready("east-0", details=details),
        ready("east-1", details={"log": str(tmp_path / "none.log")}),
        runtime="local",
    )
    tail = demo.get(f"{BASE}/logs", params={"replica": "east-0", "tail": 3}).json()
    assert tail == {
        "replica": "east-0",
        "previous": False,
        "lines": ["line 998", "line 999", "line 1000"],
        "note": None,
    }
    previous = demo.get(f"{BASE}/logs", params={"replica": "east-0", "previous": True}).json()
    assert previous["lines"] == ["starting", "Traceback: boom"]
    missing = demo.get(f"{BASE}/logs", params={"replica": "east-1"}).json()
    assert missing["lines"] == [] and "does not exist" in missing["note"]
    no_previous = demo.get(f"{BASE}/logs", params={"replica": "east-1", "previous": True}).json()
    assert no_previous["lines"] == [] and "no previous run" in no_previous["note"]
    chosen = demo.get(f"{BASE}/logs")
    assert chosen.status_code == 422 and chosen.json()["error"]["fields"][0]["field"] == "replica"
    assert demo.get(f"{BASE}/logs", params={"replica": "east-9"}).status_code == 404


def test_following_a_log_streams_new_lines(
    demo: TestClient, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observed_api, "KEEPALIVE_SECONDS", 0.2)  # quiet spells before the new lines
    log = tmp_path / "east-0.log"
    log.write_text("old 1\nold 2\n")
    observe(services, "east-h100", ready("east-0", details={"log": str(log)}), runtime="local")

    def write() -> None:
        """Once the follow has the file open (and was quiet a while), append to it."""
        deadline = time.monotonic() + 10
        while not following(log) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        with log.open("a") as f:
            f.write("new 1\nnew 2\n")

    later = threading.Thread(target=write)
    later.start()
    try:
        response = demo.get(
            f"{BASE}/logs", params={"replica": "east-0", "follow": True, "tail": 1, "max_seconds": 2.5}
        )
    finally:
        later.join()
    lines = [e["data"]["line"] for e in parse_sse(response.text) if e["event"] == "line"]
    assert lines == ["old 2", "new 1", "new 2"], response.text
    assert ": keep-alive" in response.text.split("new 1")[0]  # the follow outlived its quiet spells


def test_kubernetes_logs_need_the_watcher_in_either_language(demo: TestClient, services: Services) -> None:
    observe(services, "east-h100", ready("east-0"))
    refused = demo.get(f"{BASE}/logs", params={"replica": "east-0"})
    assert refused.status_code == 501
    assert refused.json()["error"]["message"] == "logs of kubernetes regions need the cluster watcher"
    zh = demo.get(
        f"{BASE}/logs", params={"replica": "east-0", "follow": True}, headers={"Accept-Language": "zh-CN"}
    )
    assert (
        zh.status_code == 501 and zh.json()["error"]["message"] == "查看 Kubernetes 区域的日志需要集群观测器"
    )


def test_regions_report_devices_held_next_to_the_plan(demo: TestClient, services: Services) -> None:
    def pool() -> dict[str, Any]:
        regions = demo.get("/api/regions").json()["items"]
        return next(p for r in regions for p in r["pools"] if p["name"] == "east-h100")

    assert pool()["in_use"] == 0
    with services.sessions() as session:
        launch = session.scalar(
            select(ServingPlacement.launch).where(
                ServingPlacement.serving == "qwen25-7b", ServingPlacement.pool == "east-h100"
            )
        )
    assert launch is not None
    per_replica = launch["devices"] * launch["nodes"]
    observe(
        services,
        "east-h100",
        ready("east-0"),
        ReplicaObservation("east-1", State.PENDING, reason="Unschedulable"),
    )
    assert pool()["in_use"] == per_replica  # the pending replica holds nothing
    observe(services, "east-h100", ready("east-0"), ReplicaObservation("east-1", State.DOWNLOADING))
    assert pool()["in_use"] == 2 * per_replica
    assert pool()["allocated"] is not None
