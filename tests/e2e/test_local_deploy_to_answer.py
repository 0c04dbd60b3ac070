"""The loop closed on one machine, as a user and an application meet it: deploy through the portal's API
→ supervised engine processes (the simulator standing in for vLLM) → observed ready → the workspace's
own key gets answers through the official OpenAI SDK; scale to two (both answer); stop (503 saying so,
the processes gone); an engine that exits at start is `failed` with its last log lines; the portal
SIGKILLed and restarted adopts the running engines without starting any twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from benchmarks.local_portal import STACK, Portal, alive, engine_pids, local_portal, until
from store.db import session_factory
from store.models import UsageRecord

MESSAGES = [{"role": "user", "content": "hi"}]


def deploy(portal: Portal, name: str, replicas: int = 1, **extra: object) -> None:
    body = {
        "stack": STACK,
        "name": name,
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "max_model_len": 8192,
        "placements": [{"region": "local", "pool": "local-gpu", "replicas": replicas}],
        **extra,
    }
    portal.api("POST", "/api/workspaces/team/servings", body)


def ready_replicas(portal: Portal, serving: str, n: int) -> list[int] | None:
    (placement,) = portal.placements(serving) or [None]
    if placement is None or placement.ready_replicas != n or placement.state != "ready":
        return None
    return sorted(int(r.details["pid"]) for r in placement.replicas)


def answers(sdk: openai.OpenAI, model: str) -> str | None:
    """The gateway's request id of an answered call (the portal's own id is `x-request-id`)."""
    try:
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
    except openai.APIStatusError:
        return None
    raw.parse()
    return raw.headers["x-modelfleet-request-id"]


def test_deploy_scale_stop_fail_and_restart_on_a_local_region(tmp_path: Path) -> None:
    with local_portal(tmp_path) as portal:
        portal.api("POST", "/api/workspaces", {"slug": "team", "name": "Team"})
        key = portal.api("POST", "/api/workspaces/team/api-keys", {"name": "app"})["secret_key"]
        sdk = openai.OpenAI(base_url=f"{portal.url}/v1", api_key=key, max_retries=0)
        portal.closing.append(sdk.close)

        deploy(portal, "chat")
        until(lambda: answers(sdk, "chat"), "the workspace's key gets an answer from its own serving")
        assert "chat" in [m.id for m in sdk.models.list()]

        portal.api("PATCH", "/api/workspaces/team/servings/chat/replicas", {"replicas": 2, "stack": STACK})
        two = until(lambda: ready_replicas(portal, "chat", 2), "two replicas ready")
        assert len(set(two)) == 2 and all(alive(p) for p in two)
        ids = [answers(sdk, "chat") for _ in range(8)]
        assert None not in ids

        def recorded() -> list[UsageRecord] | None:
            with session_factory(portal.engine)() as session:
                rows = list(session.scalars(select(UsageRecord).where(UsageRecord.request_id.in_(ids))))
            return rows if len(rows) == 8 else None

        served = Counter(r.target for r in until(recorded, "the usage rows of the eight calls"))
        assert len(served) == 2 and None not in served, served  # both processes took traffic

        portal.api("POST", "/api/workspaces/team/servings/chat/actions", {"action": "stop", "stack": STACK})
        until(lambda: portal.placements("chat")[0].state == "stopped", "the placement observed stopped")
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert "chat is stopped" in str(refused.value)
        until(lambda: not any(alive(p) for p in two), "the stopped serving's processes are gone", 15)

        deploy(portal, "broken", env={"SIMULATOR_EXIT_AT_START": "3"})
        failed = until(
            lambda: next((p for p in portal.placements("broken") if p.state == "failed"), None),
            "an engine that exits at start is failed",
        )
        assert failed.message is not None and "3" in failed.message
        replica = failed.replicas[0]
        assert replica.exit_code == 3 and "simulator" in (replica.message or "").lower()

        portal.api("POST", "/api/workspaces/team/servings/chat/actions", {"action": "start", "stack": STACK})
        before = until(lambda: ready_replicas(portal, "chat", 2), "started again: two replicas ready")
        portal.kill()
        assert all(alive(p) for p in before)
        portal.start()
        until(lambda: answers(sdk, "chat"), "answers after the portal's restart")
        assert ready_replicas(portal, "chat", 2) == before  # adopted: the same processes
        assert engine_pids(portal) >= set(before)
        for log in (portal.data_dir / "runtime").rglob("*.log"):
            if "chat" in log.parts and not log.name.endswith(".previous.log"):
                assert log.read_text().count("[modelfleet] $ ") == 1, log  # started once
