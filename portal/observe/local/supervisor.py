"""The local runtime's supervisor: keeps each local placement's desired replicas running as processes
and reports what it sees through the recorder.

A pass (every `PASS_SECONDS`, in one thread) reads the `serving_placements` rows of `local` regions
this process leads (`Leases`) and, for each:

- replicas `0 .. desired-1` are kept running: a missing one is started (a free port, its own process
  group, the launch's env over the portal's minus its secrets, stdout+stderr appended to its log, the
  previous run's log kept as `.previous.log`); one that exited is restarted after an exponential
  back-off, reported `failed` (`CrashLoopBackOff`, its exit code and last log lines) meanwhile; one
  whose launch changed is replaced: stopped first, then started (a local region is one machine, where
  two copies of a model rarely fit);
- readiness is the engine's health endpoint asked as its readiness probe asks: `loading` until it
  answers, then `ready` at `http://127.0.0.1:<port>` (the gateway routes to that address);
- replicas from `desired` up are stopped (SIGTERM to the group, SIGKILL after `stop_grace`), so
  scaling down stops the highest-numbered ones; desired 0 and deleted rows stop everything.

Each replica's state file lets a portal restarted after a crash adopt the processes still running
(recognised by pid and start time) instead of starting them twice. Stopping the portal leaves the
engines running for the next start to adopt; `stop_all` stops them (tests, deleting the runtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from portal.observe.local import health, logs, process
from portal.observe.local.command import LaunchError, replica_command
from portal.observe.local.leases import Leases
from portal.observe.local.replica import PlacementKey, ReplicaFile, load_all, log_path, remove
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation, State
from store.db import transaction, utcnow
from store.models import ServingPlacement

log = logging.getLogger("modelfleet.portal.local")

PASS_SECONDS = 0.3
HEARTBEAT_SECONDS = 5.0  # an unchanged placement is still reported this often (`observed_at`)
READY_PROBE_SECONDS = 2.0  # a ready replica is asked again this often (the probe's period)
READY_FAILURES = 3  # answers missed in a row before a ready replica is not ready any more
STOP_GRACE_SECONDS = 10.0
LOG_LINES = 20  # the last lines of a failed process's log, in its message


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart number n: first, doubled each time, at most limit (the kubelet's shape)."""

    first: float = 1.0
    limit: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.limit, self.first * 2 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class Desired:
    """One `serving_placements` row of a local region, detached from its session."""

    id: int
    key: PlacementKey
    replicas: int
    launch: dict[str, Any]
    served_name: str

    @property
    def revision(self) -> str:
        """The launch's digest: only a different launch replaces processes (not a replica count)."""
        return hashlib.sha256(json.dumps(self.launch, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Replica:
    """What the supervisor knows of one replica between passes."""

    key: PlacementKey
    index: int
    file: ReplicaFile | None = None  # the process it runs; None: not running
    popen: subprocess.Popen[bytes] | None = None  # when this process started it
    ready: bool = False
    missed: int = 0  # readiness answers missed in a row
    next_probe: float = 0.0
    exit_code: int | None = None
    failure: tuple[str, str] | None = None  # (reason, message) while waiting to restart
    failures: int = 0  # in a row, for the back-off
    restarts: int = 0
    next_start: float = 0.0
    stopping_since: float | None = None

    @property
    def name(self) -> str:
        return self.key.replica_name(self.index)


@dataclass
class Supervisor:
    sessions: sessionmaker[Session]
    root: Path  # <data_dir>/runtime
    leases: Leases
    backoff: Backoff = Backoff()
    stop_grace: float = STOP_GRACE_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    clock: Callable[[], float] = time.monotonic
    replicas: dict[PlacementKey, dict[int, Replica]] = field(default_factory=dict)
    reported: dict[int, tuple[list[ReplicaObservation], float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for found in load_all(self.root):  # adoption: what an earlier run of the portal started
            replica = Replica(found.key, found.index, file=found, restarts=found.restarts)
            self.replicas.setdefault(found.key, {})[found.index] = replica

    # -- the pass ------------------------------------------------------------------------------------
    def run_once(self) -> None:
        now = self.clock()
        self.leases.check()
        wanted = {d.key: d for d in self._desired() if self.leases.hold(d.key.region)}
        for desired in wanted.values():
            observed = self._reconcile(desired, now)
            self._report(desired, observed, now)
        for key in [k for k in self.replicas if k not in wanted and self.leases.hold(k.region)]:
            self._retire(key, now)  # the placement was deleted, or left the local runtime

    def _desired(self) -> list[Desired]:
        with self.sessions() as session:
            rows = session.scalars(select(ServingPlacement).where(ServingPlacement.runtime == "local"))
            return [
                Desired(
                    row.id,
                    PlacementKey(row.stack, row.serving, row.region, row.pool),
                    row.desired_replicas,
                    dict(row.launch),
                    row.public_name,
                )
                for row in rows
            ]

    def _reconcile(self, desired: Desired, now: float) -> list[ReplicaObservation]:
        replicas = self.replicas.setdefault(desired.key, {})
        observed = []
        for index in sorted(set(range(desired.replicas)) | set(replicas)):
            replica = replicas.setdefault(index, Replica(desired.key, index))
            if index >= desired.replicas:  # scaled down (or stopped): the highest-numbered go
                if self._stop(replica, now):
                    del replicas[index]
                else:
                    observed.append(self._stopping(replica))
                continue
            self._keep(replica, desired, now)
            observed.append(self._observe(replica, desired))
        return observed

    def _retire(self, key: PlacementKey, now: float) -> None:
        replicas = self.replicas[key]
        for index, replica in list(replicas.items()):
            if self._stop(replica, now):
                del replicas[index]
        if not replicas:
            del self.replicas[key]

    # -- one replica ---------------------------------------------------------------------------------
    def _keep(self, replica: Replica, desired: Desired, now: float) -> None:
        if replica.stopping_since is not None and not self._stop(replica, now):
            return  # being replaced (or scaled down and up again): start once the old one is gone
        if replica.file is not None:
            if not self._running(replica):
                self._exited(replica, now)
            elif replica.file.revision != desired.revision:
                log.info("replica %s: the launch changed, replacing its process", replica.name)
                self._stop(replica, now)
                return
        if replica.file is None:
            if now >= replica.next_start:
                self._start(replica, desired, now)
            return
        if not replica.ready or now >= replica.next_probe:
            self._probe(replica, desired, now)

    def _start(self, replica: Replica, desired: Desired, now: float) -> None:
        directory = desired.key.directory(self.root)
        directory.mkdir(parents=True, exist_ok=True)
        port = process.free_port()
        try:
            command = replica_command(desired.launch, desired.served_name, port)
        except LaunchError as exc:
            self._failed(replica, now, exc.reason, str(exc))
            return
        current = log_path(self.root, desired.key, replica.index)
        if current.exists() and current.stat().st_size:  # keep the last run's words for "previous"
            current.replace(log_path(self.root, desired.key, replica.index, previous=True))
        with current.open("a") as out:
            out.write(_header(replica, desired, command.engine, command.stands_in_for, port))
            out.write(f"[modelfleet] $ {shlex.join(command.argv)}\n")
        try:
            popen = process.spawn(command.argv, command.env, current, directory)
        except OSError as exc:
            self._failed(replica, now, "StartError", f"{command.argv[0]}: {exc}")
            return
        replica.file = ReplicaFile(
            stack=desired.key.stack,
            serving=desired.key.serving,
            region=desired.key.region,
            pool=desired.key.pool,
            index=replica.index,
            pid=popen.pid,
            started=process.start_time(popen.pid) or 0,
            port=port,
            revision=desired.revision,
            engine=command.engine,
            stands_in_for=command.stands_in_for,
            restarts=replica.restarts,
        )
        replica.file.save(self.root)
        replica.popen, replica.ready, replica.missed, replica.failure = popen, False, 0, None
        replica.exit_code = None
        log.info("replica %s started: pid %s, port %s (%s)", replica.name, popen.pid, port, command.engine)

    def _running(self, replica: Replica) -> bool:
        assert replica.file is not None
        if replica.popen is not None:
            code = replica.popen.poll()
            replica.exit_code = code
            return code is None
        if process.alive(replica.file.pid, replica.file.started):
            return True
        replica.exit_code = process.reap(replica.file.pid)  # ours only when this process started it
        return False

    def _exited(self, replica: Replica, now: float) -> None:
        assert replica.file is not None
        last = logs.tail(log_path(self.root, replica.key, replica.index), LOG_LINES)
        code = replica.exit_code
        how = (
            f"exit code {code}"
            if code is not None
            else "exit code unknown (started by an earlier portal run)"
        )
        replica.restarts += 1
        remove(self.root, replica.key, replica.index)
        replica.file, replica.popen, replica.ready = None, None, False
        self._failed(replica, now, "CrashLoopBackOff", f"the process exited ({how})", last)

    def _failed(self, replica: Replica, now: float, reason: str, what: str, last: Sequence[str] = ()) -> None:
        replica.failures += 1
        delay = self.backoff.delay(replica.failures)
        replica.next_start = now + delay
        message = f"{what}; back-off {delay:g} s before restarting"
        if last:
            message += "; last log lines:\n" + "\n".join(last)
        replica.failure = (reason, message)
        log.warning("replica %s: %s", replica.name, message.splitlines()[0])

    def _probe(self, replica: Replica, desired: Desired, now: float) -> None:
        assert replica.file is not None
        if health.probe(replica.file.port, desired.launch.get("health_path")):
            replica.ready, replica.missed, replica.failures = True, 0, 0  # a ready start resets the back-off
            replica.failure = None
        elif replica.ready:
            replica.missed += 1
            replica.ready = replica.missed < READY_FAILURES
        replica.next_probe = now + READY_PROBE_SECONDS

    def _stop(self, replica: Replica, now: float) -> bool:
        """Move `replica`'s process towards stopped; True once it is gone."""
        file = replica.file
        if file is None or not self._running(replica):
            if file is not None:
                remove(self.root, replica.key, replica.index)
            replica.file, replica.popen, replica.ready, replica.stopping_since = None, None, False, None
            return True
        if replica.stopping_since is None:
            process.signal_group(file.pid, file.started, signal.SIGTERM)
            replica.stopping_since, replica.ready = now, False
        elif now - replica.stopping_since >= self.stop_grace:
            process.signal_group(file.pid, file.started, signal.SIGKILL)
        return False

    # -- what is seen --------------------------------------------------------------------------------
    def _observe(self, replica: Replica, desired: Desired) -> ReplicaObservation:
        file = replica.file
        log_file = str(log_path(self.root, desired.key, replica.index))
        # Where the API reads the replica's log and the previous run's (portal/observe/logs.py).
        previous = log_path(self.root, desired.key, replica.index, previous=True)
        logs = {"log": log_file, "previous_log": str(previous)}
        common: dict[str, Any] = {"name": replica.name, "restarts": replica.restarts}
        if file is None:
            failed: dict[str, Any] = dict(logs)
            if replica.failure is not None:
                reason, message = replica.failure
                return ReplicaObservation(
                    state=State.FAILED,
                    reason=reason,
                    message=message,
                    exit_code=replica.exit_code,
                    details=failed,
                    **common,
                )
            return ReplicaObservation(state=State.PENDING, reason="Starting", details=failed, **common)
        details: dict[str, Any] = {"pid": file.pid, "port": file.port, "engine": file.engine, **logs}
        engine = f"the {desired.launch.get('engine', 'engine')} engine"
        if file.stands_in_for:
            details["stands_in_for"] = file.stands_in_for
            engine = f"the engine simulator (standing in for {file.stands_in_for}; made-up text)"
        if replica.stopping_since is not None:
            return ReplicaObservation(
                state=State.PENDING,
                reason="Replacing",
                message=f"the launch changed: stopping pid {file.pid} before starting the new one",
                details=details,
                **common,
            )
        if replica.ready:
            url = f"http://127.0.0.1:{file.port}"
            return ReplicaObservation(
                state=State.READY, message=f"{engine} answers", url=url, details=details, **common
            )
        asked = health.describe(file.port, desired.launch.get("health_path"))
        return ReplicaObservation(
            state=State.LOADING,
            reason="Loading",
            message=f"{engine} is starting: waiting for {asked} to answer",
            details=details,
            **common,
        )

    def _stopping(self, replica: Replica) -> ReplicaObservation:
        file = replica.file
        assert file is not None
        return ReplicaObservation(
            name=replica.name,
            state=State.STOPPED,
            reason="Stopping",
            message=f"SIGTERM sent to process group {file.pid}; SIGKILL after {self.stop_grace:g} s",
            restarts=replica.restarts,
            details={"pid": file.pid, "port": file.port, "engine": file.engine},
        )

    def _report(self, desired: Desired, observed: list[ReplicaObservation], now: float) -> None:
        last = self.reported.get(desired.id)
        if last is not None and last[0] == observed and now - last[1] < self.heartbeat:
            return
        with transaction(self.sessions) as session:
            placement = session.get(ServingPlacement, desired.id)
            if placement is None:
                return  # deleted since this pass read it: the next pass retires its processes
            record(session, placement, observed, now=utcnow())
        self.reported[desired.id] = (observed, now)

    # -- for tests and teardown ------------------------------------------------------------------------
    def stop_all(self, grace: float | None = None) -> None:
        """Stop every process this supervisor knows (SIGTERM, SIGKILL after `grace`) and wait."""
        left = [r for replicas in self.replicas.values() for r in replicas.values()]
        deadline = time.monotonic() + (self.stop_grace if grace is None else grace)
        while left := [r for r in left if not self._stop(r, 0.0)]:  # now=0: no SIGKILL by _stop
            if time.monotonic() >= deadline:
                for replica in left:
                    if replica.file is not None:
                        process.signal_group(replica.file.pid, replica.file.started, signal.SIGKILL)
            time.sleep(0.02)
        self.replicas.clear()


def _header(replica: Replica, desired: Desired, engine: str, stands_in_for: str | None, port: int) -> str:
    at = utcnow().isoformat(timespec="seconds")
    if stands_in_for:
        what = (
            f"the engine SIMULATOR stands in for {stands_in_for} (made-up text, not a model; "
            f"the region's local.engines is {desired.launch.get('engines', 'auto')})"
        )
    else:
        what = f"{engine} {desired.launch.get('engine_version', '')}".strip()
    return f"[modelfleet] {at} replica {replica.name} starting on port {port}: {what}\n"


def start(supervisor: Supervisor, interval: float = PASS_SECONDS) -> Callable[[], None]:
    """Run passes in a thread; returns the function that stops the thread (the engines keep running,
    for the next start to adopt)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                supervisor.run_once()
            except Exception:  # the database blinked; processes and state files are still there
                log.exception("local runtime pass failed")
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="modelfleet-local-runtime", daemon=True)
    thread.start()

    def stop_thread() -> None:
        stop.set()
        thread.join()
        supervisor.leases.release()

    return stop_thread
