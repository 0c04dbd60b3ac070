"""100 concurrent deploy requests against the real portal app (embedded SQLite, git backend, the
worker thread on): how many stack updates they become, how long until all are committed, and that
none is lost and each has its audit row.

    python -m benchmarks.portal_updates
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from benchmarks.report import bench
from benchmarks.synthetic import synthetic_stack
from portal.app import build_services, create_app
from portal.repository import StackRepository
from portal.settings import Settings
from store.models import AuditEvent, StackRequest
from store.security import USER_TOKEN_PREFIX, issue

REQUESTS = 100
STACK = "bench"
WAIT_SECONDS = 300.0


def _seed(repo: Path) -> None:
    """A one-region stack with room for every request (synthetic pools sized for 400 servings)."""
    config, _ = synthetic_stack(400, regions=1)
    seed = repo.parent / "seed"
    (seed / STACK / "servings").mkdir(parents=True)
    doc = {"config": {f"modelfleet:{section}": value for section, value in config.items()}}
    (seed / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    StackRepository(repo).ensure(seed=seed)


def _body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "stack": STACK,
        "model": "qwen2.5-7b-instruct",
        "template": "vllm",
        "placements": [{"region": "r00", "pool": "r00-h100"}],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _seed(root / "stacks-repo")
        token = issue(USER_TOKEN_PREFIX).value
        settings = Settings(
            data_dir=root / "var",
            admin_token=token,  # type: ignore[arg-type]
            pepper="bench",  # type: ignore[arg-type]
            stacks_repo=root / "stacks-repo",
            worker_enabled=True,
            worker_poll_seconds=0.2,
            s3_timeout_seconds=0.5,
        )
        services = build_services(settings)
        with TestClient(create_app(services=services)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            client.post("/api/workspaces", json={"slug": "bench", "name": "Bench"}).raise_for_status()
            warm = client.post("/api/workspaces/bench/servings", json=_body("warm-up"))  # catalogs, clients
            warm.raise_for_status()
            _wait(services, [warm.json()["id"]])

            names = [f"svc-{i:03d}" for i in range(REQUESTS)]

            def deploy(name: str) -> int:
                answer = client.post(
                    "/api/workspaces/bench/servings", json=_body(name), headers={"Idempotency-Key": name}
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"{name}: {answer.status_code} {answer.text}")
                request_id: int = answer.json()["id"]
                return request_id

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
                ids = list(pool.map(deploy, names))
            accepted = time.perf_counter() - start
            statuses = _wait(services, ids)
            total = time.perf_counter() - start
            with services.sessions() as session:
                jobs = session.scalar(
                    select(func.count(func.distinct(StackRequest.job_id))).where(StackRequest.id.in_(ids))
                )
                audits = session.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(
                        AuditEvent.action == "CreateWSModelServing",
                        AuditEvent.resource_id.in_([f"{STACK}/{n}" for n in names]),
                    )
                )
            committed = len(list((services.repository.stacks_dir / STACK / "servings").glob("svc-*.yaml")))
        services.engine.dispose()
    bench("portal_100_requests_jobs", jobs or 0, "jobs")
    bench("portal_100_requests_accept_time", accepted, "s")
    bench("portal_100_requests_total_time", total, "s")
    bench(
        "portal_100_requests_lost", REQUESTS - sum(1 for s in statuses.values() if s == "applied"), "requests"
    )
    bench("portal_100_requests_committed_files", committed, "files")
    bench("portal_100_requests_audit_rows", audits or 0, "rows")


def _wait(services: Any, ids: list[int]) -> dict[int, str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with services.sessions() as session:
            statuses = dict(
                session.execute(
                    select(StackRequest.id, StackRequest.status).where(StackRequest.id.in_(ids))
                ).all()
            )
        if all(s in ("applied", "failed") for s in statuses.values()) or time.monotonic() > deadline:
            return {int(k): str(v) for k, v in statuses.items()}
        time.sleep(0.05)


if __name__ == "__main__":
    main()
