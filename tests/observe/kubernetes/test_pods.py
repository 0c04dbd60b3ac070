"""One pod's state from its status and events: each start-up phase and each failure, with the
cluster's own words."""

from __future__ import annotations

from portal.observe.kubernetes.pods import observe_pod
from portal.observe.states import State
from tests.observe.kubernetes import factories as k

SCHEDULER = (
    "0/4 nodes are available: 4 Insufficient huawei.com/ascend-1980. preemption: 0/4 nodes are "
    "available: 4 No preemption victims found for incoming pod."
)


def test_unschedulable_carries_the_schedulers_message() -> None:
    pod = k.pod("qwen-east-h100-7d9-abc", node=None, conditions=k.unschedulable(SCHEDULER))
    seen = observe_pod(pod, [k.event(pod["metadata"]["name"], "FailedScheduling", SCHEDULER, type="Warning")])
    assert (seen.state, seen.reason, seen.message) == (State.PENDING, "Unschedulable", SCHEDULER)


def test_unschedulable_without_the_event_reads_the_condition() -> None:
    seen = observe_pod(k.pod("p", node=None, conditions=k.unschedulable(SCHEDULER)))
    assert (seen.state, seen.reason, seen.message) == (State.PENDING, "Unschedulable", SCHEDULER)


def test_a_new_pod_waits_for_the_scheduler() -> None:
    seen = observe_pod(k.pod("p", node=None))
    assert (seen.state, seen.reason) == (State.PENDING, "Scheduling")


def test_an_earlier_pods_events_do_not_count() -> None:
    """A LeaderWorkerSet pod keeps its name when recreated: events of the old one carry another uid."""
    old = k.event("p", "FailedScheduling", SCHEDULER, type="Warning")
    old["involvedObject"]["uid"] = "uid-of-the-previous-pod"
    seen = observe_pod(k.pod("p", node=None), [old])
    assert seen.reason == "Scheduling"


def test_pulling_the_init_image() -> None:
    pod = k.pod("p", init=k.status("model-fetch", k.waiting("PodInitializing")))
    pulling = k.event("p", "Pulling", f'Pulling image "{k.FETCH_IMAGE}"', container="model-fetch", init=True)
    seen = observe_pod(pod, [pulling])
    assert (seen.state, seen.message) == (State.PULLING, f'Pulling image "{k.FETCH_IMAGE}"')


def test_pulled_then_downloading_the_model() -> None:
    pod = k.pod("p", init=k.status("model-fetch", k.running(), image=k.FETCH_IMAGE))
    events = [
        k.event("p", "Pulling", "Pulling image", container="model-fetch", init=True, when=k.at(1)),
        k.event("p", "Pulled", "Successfully pulled", container="model-fetch", init=True, when=k.at(5)),
    ]
    seen = observe_pod(pod, events)
    assert (seen.state, seen.reason) == (State.DOWNLOADING, "Downloading")


def test_pulling_the_engine_image_after_the_download() -> None:
    pod = k.pod("p", init=k.FETCH_DONE, engine=k.status("engine", k.waiting("ContainerCreating")))
    events = [k.event("p", "Pulling", f'Pulling image "{k.ENGINE_IMAGE}"', container="engine", when=k.at(30))]
    seen = observe_pod(pod, events)
    assert seen.state is State.PULLING
    assert k.ENGINE_IMAGE in (seen.message or "")


def test_a_missing_volume_keeps_the_pod_pending_with_the_kubelets_words() -> None:
    pod = k.pod("p", init=k.status("model-fetch", k.waiting("PodInitializing")))
    mount = 'MountVolume.SetUp failed for volume "models" : persistentvolumeclaim "model-cache" not found'
    seen = observe_pod(pod, [k.event("p", "FailedMount", mount, type="Warning")])
    assert (seen.state, seen.reason, seen.message) == (State.PENDING, "FailedMount", mount)


def test_image_pull_failure_names_the_image() -> None:
    pull = f'failed to pull and unpack image "{k.ENGINE_IMAGE}": not found'
    pod = k.pod("p", init=k.FETCH_DONE, engine=k.status("engine", k.waiting("ImagePullBackOff", pull)))
    seen = observe_pod(pod)
    assert (seen.state, seen.reason) == (State.FAILED, "ImagePullBackOff")
    assert f'image "{k.ENGINE_IMAGE}" of container engine cannot be pulled' in (seen.message or "")
    assert "not found" in (seen.message or "")


def test_loading_until_the_startup_probe_passes() -> None:
    pod = k.pod(
        "p",
        phase="Running",
        init=k.FETCH_DONE,
        engine=k.status("engine", k.running(k.at(60)), started=False),
    )
    refused = 'Startup probe failed: Get "http://10.1.2.3:8000/health": dial tcp: connect: connection refused'
    seen = observe_pod(
        pod, [k.event("p", "Unhealthy", refused, type="Warning", container="engine", when=k.at(90))]
    )
    assert (seen.state, seen.reason) == (State.LOADING, "Loading")
    assert refused in (seen.message or "")


def test_probe_failures_of_an_earlier_run_do_not_count() -> None:
    pod = k.pod(
        "p",
        phase="Running",
        init=k.FETCH_DONE,
        engine=k.status("engine", k.running(k.at(600)), started=False),
    )
    old = k.event(
        "p", "Unhealthy", "Startup probe failed: old", type="Warning", container="engine", when=k.at(100)
    )
    assert observe_pod(pod, [old]).message == "loading the model"


def test_ready() -> None:
    seen = observe_pod(k.ready_pod("p"))
    assert (seen.state, seen.reason, seen.details["node"]) == (State.READY, None, "gpu-node-1")


def test_readiness_lost_after_start_is_a_failure_with_the_probes_words() -> None:
    pod = k.pod(
        "p", phase="Running", init=k.FETCH_DONE, engine=k.status("engine", k.running(k.at(10)), started=True)
    )
    probe = "Readiness probe failed: HTTP probe failed with statuscode: 503"
    seen = observe_pod(
        pod, [k.event("p", "Unhealthy", probe, type="Warning", container="engine", when=k.at(900))]
    )
    assert (seen.state, seen.reason, seen.message) == (State.FAILED, "ReadinessProbeFailed", probe)


def test_crash_loop_has_exit_code_restarts_and_log_lines() -> None:
    engine = k.status(
        "engine",
        k.waiting("CrashLoopBackOff", "back-off 2m40s restarting failed container=engine"),
        restarts=4,
        last=k.terminated(1, "Error"),
    )
    pod = k.pod("p", phase="Running", init=k.FETCH_DONE, engine=engine)
    logs = {("p", "engine"): "ValueError: No available memory for the cache blocks.\n"}
    seen = observe_pod(pod, logs=logs)
    assert (seen.state, seen.reason, seen.exit_code, seen.restarts) == (
        State.FAILED,
        "CrashLoopBackOff",
        1,
        4,
    )
    assert "exited with code 1 (Error); restarted 4 times" in (seen.message or "")
    assert (seen.message or "").endswith("No available memory for the cache blocks.")


def test_crash_loop_without_logs_uses_the_termination_message() -> None:
    last = k.terminated(1, "Error", message="RuntimeError: CUDA error: no kernel image")
    pod = k.pod(
        "p",
        init=k.FETCH_DONE,
        engine=k.status("engine", k.waiting("CrashLoopBackOff"), restarts=1, last=last),
    )
    assert "CUDA error: no kernel image" in (observe_pod(pod).message or "")


def test_oom_killed() -> None:
    engine = k.status(
        "engine", k.waiting("CrashLoopBackOff"), restarts=2, last=k.terminated(137, "OOMKilled")
    )
    seen = observe_pod(k.pod("p", phase="Running", init=k.FETCH_DONE, engine=engine))
    assert (seen.state, seen.reason, seen.exit_code) == (State.FAILED, "OOMKilled", 137)


def test_killed_for_failing_the_startup_probe() -> None:
    engine = k.status("engine", k.waiting("CrashLoopBackOff"), restarts=1, last=k.terminated(137, "Error"))
    pod = k.pod("p", phase="Running", init=k.FETCH_DONE, engine=engine)
    kill = k.event(
        "p", "Killing", "Container engine failed startup probe, will be restarted", container="engine"
    )
    seen = observe_pod(pod, [kill])
    assert (seen.state, seen.reason) == (State.FAILED, "StartupProbeFailed")
    assert "after failing its startup probe" in (seen.message or "")


def test_the_model_download_failing() -> None:
    fetch = k.status(
        "model-fetch", k.waiting("CrashLoopBackOff"), restarts=3, last=k.terminated(1), image=k.FETCH_IMAGE
    )
    pod = k.pod("p", init=fetch)
    logs = {("p", "model-fetch"): "ERROR: NoSuchBucket: the bucket does not exist"}
    seen = observe_pod(pod, logs=logs)
    assert (seen.state, seen.exit_code) == (State.FAILED, 1)
    assert "container model-fetch exited with code 1" in (seen.message or "")
    assert "NoSuchBucket" in (seen.message or "")


def test_missing_secret_is_a_failure() -> None:
    waiting = k.waiting("CreateContainerConfigError", 'secret "model-store-credentials" not found')
    seen = observe_pod(k.pod("p", init=k.status("model-fetch", waiting, image=k.FETCH_IMAGE)))
    assert (seen.state, seen.reason) == (State.FAILED, "CreateContainerConfigError")
    assert 'secret "model-store-credentials" not found' in (seen.message or "")


def test_admission_refusal() -> None:
    message = "Pod Allocate failed due to requested number of devices unavailable for nvidia.com/gpu."
    seen = observe_pod(k.pod("p", phase="Failed", reason="UnexpectedAdmissionError", message=message))
    assert (seen.state, seen.reason, seen.message) == (State.FAILED, "UnexpectedAdmissionError", message)


def test_terminating() -> None:
    seen = observe_pod(k.ready_pod("p", deleting=True))
    assert (seen.state, seen.reason) == (State.STOPPED, "Terminating")
