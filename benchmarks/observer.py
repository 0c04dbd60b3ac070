"""The kubernetes observer's cost: CPU time to take 1,000 pod MODIFIED watch events (as JSON lines),
derive the touched placements' replicas and record them, beside the floor of merely decoding the
same 1,000 lines.

100 placements of 10 pods each; every event moves one pod between loading and ready. The watcher
debounces: here a flush (derive + one `record` transaction over the placements touched) follows
every 100 events, as a burst within the debounce window would. Embedded SQLite in a temporary
folder.

    python -m benchmarks.observer
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from benchmarks.report import bench
from portal.observe.kubernetes.inventory import Inventory, Key
from portal.observe.kubernetes.kinds import DEPLOYMENTS, PODS
from portal.observe.kubernetes.listwatch import Changed, Relisted
from portal.observe.kubernetes.replicas import observe_placement
from portal.observe.recorder import record
from store.db import make_engine, session_factory, transaction
from store.migrate import migrate
from store.models import ServingPlacement

PLACEMENTS = 100
PODS_EACH = 10
EVENTS = 1_000
FLUSH_EVERY = 100


def _pod(serving: str, index: int, ready: bool, rv: int) -> dict[str, Any]:
    engine = {
        "name": "engine",
        "state": {"running": {"startedAt": "2026-03-01T10:00:00Z"}},
        "ready": ready,
        "started": ready,
        "restartCount": 0,
    }
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": f"{serving}-pool-{index}",
            "uid": f"uid-{serving}-{index}",
            "resourceVersion": str(rv),
            "labels": {
                "app.kubernetes.io/managed-by": "modelfleet",
                "modelfleet.io/serving": serving,
                "modelfleet.io/region": "r1",
                "modelfleet.io/pool": "pool",
            },
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "engine", "image": "vllm"}]},
        "status": {
            "phase": "Running",
            "initContainerStatuses": [
                {"name": "model-fetch", "state": {"terminated": {"exitCode": 0}}, "restartCount": 0}
            ],
            "containerStatuses": [engine],
        },
    }


def _deployment(serving: str) -> dict[str, Any]:
    labels = {"modelfleet.io/serving": serving, "modelfleet.io/pool": "pool"}
    return {"kind": "Deployment", "metadata": {"name": f"{serving}-pool", "labels": labels}, "spec": {}}


def _database(folder: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{folder / 'bench.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for i in range(PLACEMENTS):
            session.add(
                ServingPlacement(
                    stack="bench",
                    serving=f"s{i}",
                    workspace="platform",
                    region="r1",
                    pool="pool",
                    public_name=f"s{i}",
                    endpoint="http://x",
                    desired_replicas=PODS_EACH,
                )
            )
    return sessions


def _lines() -> list[bytes]:
    lines = []
    for n in range(EVENTS):
        serving, index = f"s{n % PLACEMENTS}", (n // PLACEMENTS) % PODS_EACH
        pod = _pod(serving, index, ready=n % 2 == 0, rv=1000 + n)
        lines.append(json.dumps({"type": "MODIFIED", "object": pod}).encode() + b"\n")
    return lines


def _flush(sessions: sessionmaker[Session], inventory: Inventory, dirty: set[Key]) -> None:
    observed = {key: observe_placement(inventory.placement(key)) for key in dirty}
    with transaction(sessions) as session:
        query = (
            select(ServingPlacement)
            .where(ServingPlacement.serving.in_({s for s, _ in dirty}))
            .options(selectinload(ServingPlacement.replicas))
        )
        for row in session.scalars(query):
            record(session, row, observed[(row.serving, row.pool)])


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        sessions = _database(Path(folder))
        inventory = Inventory()
        inventory.take(DEPLOYMENTS, Relisted([_deployment(f"s{i}") for i in range(PLACEMENTS)], "1"))
        start_pods = [_pod(f"s{i}", j, False, 1) for i in range(PLACEMENTS) for j in range(PODS_EACH)]
        inventory.take(PODS, Relisted(start_pods, "1"))
        _flush(sessions, inventory, inventory.keys())  # the first list: every replica row created
        lines = _lines()

        start = time.process_time()
        for line in lines:
            json.loads(line)
        baseline = time.process_time() - start

        start = time.process_time()
        dirty: set[Key] = set()
        for n, line in enumerate(lines, 1):
            event = json.loads(line)
            dirty |= inventory.take(PODS, Changed(event["type"], event["object"]))
            if n % FLUSH_EVERY == 0:
                _flush(sessions, inventory, dirty)
                dirty = set()
        observer = time.process_time() - start

        start = time.process_time()  # the pure part alone: take + derive the touched placement
        for line in lines:
            event = json.loads(line)
            for key in inventory.take(PODS, Changed(event["type"], event["object"])):
                observe_placement(inventory.placement(key))
        derive = time.process_time() - start

    bench("observer_cpu_per_1000_pod_events", observer * 1e3, "ms")
    bench("observer_derive_cpu_per_1000_pod_events", derive * 1e3, "ms")
    bench("observer_json_decode_1000_events", baseline * 1e3, "ms")
    bench("observer_over_json_decode", observer / baseline, "x")


if __name__ == "__main__":
    main()
