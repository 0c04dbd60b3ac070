"""A placement's replicas: pods of a Deployment (with its rollout conditions), groups of a
LeaderWorkerSet (ready only when the whole group is)."""

from __future__ import annotations

from portal.observe.kubernetes.replicas import PlacementObjects, observe_placement
from portal.observe.states import State, summarise
from tests.observe.kubernetes import factories as k


def loading(name: str, **kw: object) -> dict[str, object]:
    return k.pod(
        name, phase="Running", init=k.FETCH_DONE, engine=k.status("engine", k.running(), started=False), **kw
    )  # type: ignore[arg-type]


def test_one_replica_per_pod_sorted_by_name() -> None:
    seen = observe_placement(
        PlacementObjects(k.deployment(replicas=2), [k.ready_pod("qwen-b"), loading("qwen-a")])
    )
    assert [(s.name, s.state) for s in seen] == [("qwen-a", State.LOADING), ("qwen-b", State.READY)]
    assert summarise(2, seen).state is State.DEGRADED


def test_progress_deadline_turns_the_unready_replicas_into_failures() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "qwen-east-h100-7d9" has timed out progressing.',
    }
    seen = observe_placement(
        PlacementObjects(k.deployment(replicas=2, conditions=[condition]), [k.ready_pod("a"), loading("b")])
    )
    assert [(s.name, s.state, s.reason) for s in seen] == [
        ("a", State.READY, None),
        ("b", State.FAILED, "ProgressDeadlineExceeded"),
    ]
    assert (seen[1].message or "").startswith(
        'ReplicaSet "qwen-east-h100-7d9" has timed out progressing.; loading'
    )


def test_a_deployment_that_cannot_create_pods() -> None:
    condition = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "qwen-east-h100-7d9-x" is forbidden: exceeded quota: gpu-quota',
    }
    seen = observe_placement(PlacementObjects(k.deployment(conditions=[condition]), []))
    assert [(s.name, s.state, s.reason) for s in seen] == [("qwen-east-h100", State.FAILED, "FailedCreate")]
    assert "exceeded quota" in (seen[0].message or "")


def lws(group: int, worker: int, **kw: object) -> dict[str, object]:
    return k.lws_pod("deepseek", "south-910b", group, worker, **kw)  # type: ignore[arg-type]


def ready_lws(group: int, worker: int) -> dict[str, object]:
    return lws(
        group,
        worker,
        phase="Running",
        init=k.FETCH_DONE,
        engine=k.status("engine", k.running(), ready=True, started=True),
    )


def test_a_group_is_one_replica_ready_only_when_every_member_is() -> None:
    workload = k.leader_worker_set(replicas=2, size=2)
    seen = observe_placement(
        PlacementObjects(
            workload,
            [
                ready_lws(0, 0),
                ready_lws(0, 1),
                ready_lws(1, 0),
                lws(1, 1, init=k.status("model-fetch", k.running())),
            ],
        )
    )
    assert [(s.name, s.state) for s in seen] == [
        ("deepseek-south-910b-0", State.READY),
        ("deepseek-south-910b-1", State.DOWNLOADING),
    ]
    assert seen[1].message == "1 of 2 pods ready; deepseek-south-910b-1-1: fetching the model weights"
    assert seen[1].details["pods"] == {
        "deepseek-south-910b-1": "ready",
        "deepseek-south-910b-1-1": "downloading",
    }
    assert summarise(2, seen).state is State.DEGRADED


def test_a_group_with_a_missing_worker_is_pending() -> None:
    seen = observe_placement(PlacementObjects(k.leader_worker_set(size=4), [ready_lws(0, 0)]))
    assert (seen[0].state, seen[0].reason) == (State.PENDING, "GroupIncomplete")
    assert seen[0].message == "1 of 4 pods ready; 3 of 4 pods not created yet"


def test_a_failed_worker_fails_its_group() -> None:
    crashed = k.status(
        "engine", k.waiting("CrashLoopBackOff"), restarts=2, last=k.terminated(137, "OOMKilled")
    )
    seen = observe_placement(
        PlacementObjects(
            k.leader_worker_set(size=2),
            [ready_lws(0, 0), lws(0, 1, phase="Running", init=k.FETCH_DONE, engine=crashed)],
        )
    )
    assert (seen[0].state, seen[0].reason, seen[0].exit_code, seen[0].restarts) == (
        State.FAILED,
        "OOMKilled",
        137,
        2,
    )
    assert (seen[0].message or "").startswith(
        "deepseek-south-910b-0-1: container engine exited with code 137"
    )


def test_pods_not_yet_labelled_by_the_controller_are_left_out() -> None:
    unlabelled = k.pod("deepseek-south-910b-0", serving="deepseek", pool="south-910b")
    assert observe_placement(PlacementObjects(k.leader_worker_set(), [unlabelled])) == []
