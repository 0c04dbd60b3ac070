"""One pod's state, from its status and its events (pure).

The pod moves through what our pod template makes it do: be scheduled (or not: the scheduler says
why), pull images, run the `model-fetch` init container (downloading the weights), start the engine
(loading, until the startup probe passes), and answer the readiness probe (ready). Every state
carries the cluster's own words: the scheduler's message, the kubelet's waiting reason and message,
the probe's failure, the exit code and the last log lines of a crashed engine.

`logs` are the last lines of a container's previous run, fetched by the watcher from the pod log
endpoint (`previous=true&tailLines=N`) for crashed containers; without them the termination
message (which `FallbackToLogsOnError` fills with the log tail) is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from portal.observe.kubernetes.objects import (
    ENGINE,
    EPOCH,
    MODEL_FETCH,
    Obj,
    condition,
    event_message,
    event_time,
    events_about,
    metadata,
    name,
    parse_time,
)
from portal.observe.states import ReplicaObservation, State

# Waiting reasons of the kubelet (pkg/kubelet/images/types.go, container/sync_result.go,
# kuberuntime_container.go) that will not go away by waiting.
IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "ImageInspectError",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
CONTAINER_ERRORS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CreatePodSandboxError",
        "ConfigPodSandboxError",
        "PreCreateHookError",
        "PreStartHookError",
        "PostStartHookError",
    }
)
# Warning events that keep a scheduled pod from starting its containers, shown while it waits.
START_WARNINGS = frozenset({"FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox", "FailedSync"})
PULL_REASONS = frozenset({"Pulling", "Pulled", "Failed", "BackOff", "ErrImageNeverPull"})

Logs = Mapping[tuple[str, str], str]  # (pod, container) → the last lines of its previous run


def observe_pod(pod: Obj, events: Iterable[Obj] = (), logs: Logs | None = None) -> ReplicaObservation:
    """What `pod` is doing now; `events` may hold any events of the namespace (only this pod's count)."""
    return _Pod(pod, events_about(events, "Pod", pod), logs or {}).observe()


class _Pod:
    def __init__(self, pod: Obj, events: Sequence[Obj], logs: Logs) -> None:
        self.pod = pod
        self.name = name(pod)
        self.spec: Mapping[str, Any] = pod.get("spec") or {}
        self.status: Mapping[str, Any] = pod.get("status") or {}
        self.events = events
        self.logs = logs
        self.inits: list[Mapping[str, Any]] = list(self.status.get("initContainerStatuses") or ())
        self.mains: list[Mapping[str, Any]] = list(self.status.get("containerStatuses") or ())
        self.restarts = sum(int(c.get("restartCount") or 0) for c in self.inits + self.mains)
        self.details: dict[str, Any] = {"pod": self.name}
        if self.spec.get("nodeName"):
            self.details["node"] = self.spec["nodeName"]
        if self.status.get("podIP"):
            self.details["ip"] = self.status["podIP"]

    def observe(self) -> ReplicaObservation:
        if metadata(self.pod).get("deletionTimestamp"):
            return self._seen(State.STOPPED, "Terminating", "the pod is shutting down")
        phase = self.status.get("phase")
        if phase in ("Failed", "Succeeded"):
            return self._ended(phase)
        if not self.spec.get("nodeName"):
            return self._unscheduled()
        for init in self.inits:
            seen = self._init(init)
            if seen is not None:
                return seen
        engine = self._engine_status()
        if engine is None:
            return self._starting(self._engine_spec_name(), "the pod is scheduled; creating its containers")
        return self._engine(engine)

    # -- before the containers --------------------------------------------------------------------

    def _unscheduled(self) -> ReplicaObservation:
        scheduled = condition(self.pod, "PodScheduled")
        failed = [e for e in self.events if e.get("reason") == "FailedScheduling"]
        if failed:  # the scheduler's latest summary ("0/4 nodes are available: 4 Insufficient …")
            reason = scheduled.get("reason") if scheduled else None
            return self._seen(State.PENDING, reason or "Unschedulable", event_message(failed[-1]))
        if scheduled is not None and scheduled.get("status") == "False":
            return self._seen(
                State.PENDING, scheduled.get("reason") or "Unschedulable", scheduled.get("message")
            )
        return self._seen(State.PENDING, "Scheduling", "waiting for the scheduler to place the pod")

    def _starting(self, container: str, default: str, init: bool = False) -> ReplicaObservation:
        """A scheduled container that has not started: pulling its image, or blocked by a warning."""
        pulling = self._pulling(container, init)
        if pulling is not None:
            return self._seen(State.PULLING, "Pulling", pulling)
        warnings = [e for e in self.events if e.get("reason") in START_WARNINGS]
        if warnings:
            return self._seen(State.PENDING, str(warnings[-1]["reason"]), event_message(warnings[-1]))
        return self._seen(State.PENDING, "ContainerCreating", default)

    def _pulling(self, container: str, init: bool) -> str | None:
        """The kubelet's `Pulling image "…"` message while that pull has not finished, else None."""
        path = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
        pulls = [
            e
            for e in self.events
            if e.get("reason") in PULL_REASONS and (e.get("involvedObject") or {}).get("fieldPath") == path
        ]
        if pulls and pulls[-1].get("reason") == "Pulling":
            return event_message(pulls[-1])
        return None

    # -- the model-fetch init container -----------------------------------------------------------

    def _init(self, status: Mapping[str, Any]) -> ReplicaObservation | None:
        """The state while this init container is not done; None once it exited 0."""
        state = status.get("state") or {}
        container = str(status.get("name", ""))
        if "terminated" in state and state["terminated"].get("exitCode") == 0:
            return None
        trouble = self._trouble(status, init=True)
        if trouble is not None:
            return trouble
        if "running" in state:
            if container == MODEL_FETCH:
                return self._seen(State.DOWNLOADING, "Downloading", "fetching the model weights")
            return self._seen(State.PENDING, "Initializing", f"init container {container} is running")
        return self._starting(container, f"init container {container} is starting", init=True)

    # -- the engine -------------------------------------------------------------------------------

    def _engine_spec_name(self) -> str:
        names = [c.get("name") for c in self.spec.get("containers") or ()]
        return ENGINE if ENGINE in names or not names else str(names[0])

    def _engine_status(self) -> Mapping[str, Any] | None:
        wanted = self._engine_spec_name()
        for status in self.mains:
            if status.get("name") == wanted:
                return status
        return self.mains[0] if self.mains else None

    def _engine(self, status: Mapping[str, Any]) -> ReplicaObservation:
        trouble = self._trouble(status, init=False)
        if trouble is not None:
            return trouble
        state = status.get("state") or {}
        container = str(status.get("name", ENGINE))
        if "running" not in state:
            return self._starting(container, "the engine container is being created")
        if status.get("ready"):
            return self._seen(State.READY, None, None)
        since = parse_time(state["running"].get("startedAt")) or EPOCH
        restarted = self._restart_note(status)
        if status.get("started") is False or status.get("started") is None:
            probe = self._probe_failure("Startup", container, since)
            message = f"loading the model; last startup probe: {probe}" if probe else "loading the model"
            return self._seen(State.LOADING, "Loading", message + restarted)
        probe = self._probe_failure("Readiness", container, since)
        if probe is not None:  # it answered its startup probe, then stopped answering
            return self._seen(State.FAILED, "ReadinessProbeFailed", probe + restarted)
        return self._seen(State.LOADING, "Loading", "started; waiting for the readiness probe" + restarted)

    def _probe_failure(self, probe: str, container: str, since: datetime) -> str | None:
        """The latest `Unhealthy` message of this probe for this container run, if any."""
        path = f"spec.containers{{{container}}}"
        found = [
            e
            for e in self.events
            if e.get("reason") == "Unhealthy"
            and event_message(e).startswith(f"{probe} probe failed")
            and (e.get("involvedObject") or {}).get("fieldPath") in (None, path)
            and event_time(e) >= since
        ]
        return event_message(found[-1]) if found else None

    def _restart_note(self, status: Mapping[str, Any]) -> str:
        last = (status.get("lastState") or {}).get("terminated")
        restarts = int(status.get("restartCount") or 0)
        if not restarts or not last:
            return ""
        return f" (restart {restarts}; the previous run exited with code {last.get('exitCode')})"

    # -- failures ---------------------------------------------------------------------------------

    def _trouble(self, status: Mapping[str, Any], init: bool) -> ReplicaObservation | None:
        """FAILED when the container cannot start or keeps crashing; None when it is fine so far."""
        state = status.get("state") or {}
        container = str(status.get("name", ""))
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_ERRORS:
            image = self._image(container, init) or status.get("image") or "?"
            detail = waiting.get("message") or self._latest_message(("Failed", "BackOff"))
            message = f'image "{image}" of container {container} cannot be pulled'
            return self._seen(State.FAILED, str(reason), f"{message}: {detail}" if detail else message)
        if reason in CONTAINER_ERRORS:
            message = f"container {container} cannot start: {waiting.get('message') or reason}"
            return self._seen(State.FAILED, str(reason), message)
        if reason == "CrashLoopBackOff":
            last = (status.get("lastState") or {}).get("terminated") or {}
            return self._crashed(status, last, "CrashLoopBackOff")
        terminated = state.get("terminated")
        if terminated is not None and terminated.get("exitCode") != 0:
            return self._crashed(status, terminated, str(terminated.get("reason") or "Error"))
        if terminated is not None and not init:  # an engine that exits 0 stopped serving all the same
            return self._crashed(status, terminated, "Completed")
        return None

    def _crashed(
        self, status: Mapping[str, Any], ended: Mapping[str, Any], reason: str
    ) -> ReplicaObservation:
        container = str(status.get("name", ""))
        code = ended.get("exitCode")
        why = ended.get("reason") or "Error"
        if why == "OOMKilled":
            reason = "OOMKilled"
        killed = self._killed_by_probe(container)
        if killed is not None and why != "OOMKilled":
            reason = f"{killed}ProbeFailed"
        restarts = int(status.get("restartCount") or 0)
        message = f"container {container} exited with code {code} ({why})"
        if killed is not None:
            message += f" after failing its {killed.lower()} probe"
        if restarts:
            message += f"; restarted {restarts} times"
        tail = self.logs.get((self.name, container)) or ended.get("message")
        if tail:
            message += "; last log lines:\n" + str(tail).rstrip()
        return self._seen(State.FAILED, reason, message, exit_code=code if isinstance(code, int) else None)

    def _killed_by_probe(self, container: str) -> str | None:
        """'Startup' or 'Liveness' when the kubelet's latest kill of this container was for a probe."""
        path = f"spec.containers{{{container}}}"
        kills = [
            e
            for e in self.events
            if e.get("reason") == "Killing"
            and (e.get("involvedObject") or {}).get("fieldPath") in (None, path)
        ]
        if not kills:
            return None
        text = event_message(kills[-1])
        for probe in ("startup", "liveness"):
            if f"failed {probe} probe" in text:
                return probe.capitalize()
        return None

    def _ended(self, phase: str) -> ReplicaObservation:
        """A pod that will not run again (evicted, refused at admission, exited)."""
        reason = self.status.get("reason") or phase
        message = self.status.get("message")
        engine = self._engine_status()
        ended = ((engine or {}).get("state") or {}).get("terminated") or {}
        code = ended.get("exitCode")
        if not message and ended:
            message = (
                f"container {(engine or {}).get('name')} exited with code {code} ({ended.get('reason')})"
            )
        return self._seen(State.FAILED, str(reason), message or f"the pod {phase.lower()}", exit_code=code)

    # -- helpers ----------------------------------------------------------------------------------

    def _image(self, container: str, init: bool) -> str | None:
        for spec in self.spec.get("initContainers" if init else "containers") or ():
            if spec.get("name") == container:
                return str(spec.get("image"))
        return None

    def _latest_message(self, reasons: tuple[str, ...]) -> str | None:
        found = [e for e in self.events if e.get("reason") in reasons]
        return event_message(found[-1]) if found else None

    def _seen(
        self, state: State, reason: str | None, message: str | None, exit_code: Any = None
    ) -> ReplicaObservation:
        return ReplicaObservation(
            name=self.name,
            state=state,
            reason=reason,
            message=message,
            restarts=self.restarts,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            details=dict(self.details),
        )
