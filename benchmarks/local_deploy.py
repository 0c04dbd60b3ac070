"""From a deploy click to a model that answers, on one machine: `python -m benchmarks.local_deploy`.

A real portal (`python -m portal`) over a stack whose only region is this machine (`local`, the engine
simulator standing in for vLLM). Timed from the deploy request to the first 200 answer through the
portal's `/v1` with the workspace's own key: the stack update (commit), the published placement, the
supervisor starting the engine process, its health probe passing, the observation reaching the
gateway. Baseline: the same engine program started by hand until it answers (what no platform can
beat). Lines: `deploy_to_first_answer`, `engine_start_to_first_answer`, their ratio.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.local_portal import STACK, local_portal, until
from benchmarks.processes import free_port
from benchmarks.report import bench

RUNS = 3


def engine_start() -> float:
    port = free_port()
    started = time.perf_counter()
    command = [sys.executable, "-m", "simulator", "--port", str(port), "--any-model"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(10)


def deploy_to_answer(tmp: Path) -> list[float]:
    out = []
    with local_portal(tmp) as portal:
        portal.api("POST", "/api/workspaces", {"slug": "team", "name": "Team"})
        key = portal.api("POST", "/api/workspaces/team/api-keys", {"name": "app"})["secret_key"]
        headers = {"authorization": f"Bearer {key}"}
        for i in range(RUNS):
            name = f"chat-{i}"
            body = {
                "stack": STACK,
                "name": name,
                "model": "qwen2.5-7b-instruct",
                "template": "vllm-latest",
                "max_model_len": 8192,
                "placements": [{"region": "local", "pool": "local-gpu", "replicas": 1}],
            }
            started = time.perf_counter()
            portal.api("POST", "/api/workspaces/team/servings", body)
            call = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

            def answered(model: dict[str, object] = call) -> bool:
                answer = httpx.post(
                    f"{portal.url}/v1/chat/completions", json=model, headers=headers, timeout=10
                )
                return answer.status_code == 200

            until(answered, f"{name} answers", 120)
            out.append(time.perf_counter() - started)
    return out


def main() -> None:
    engine = min(engine_start() for _ in range(RUNS))
    with tempfile.TemporaryDirectory(prefix="modelfleet-deploy-") as tmp:
        deploys = sorted(deploy_to_answer(Path(tmp)))
    median = deploys[len(deploys) // 2]
    bench("deploy_to_first_answer", median, "s")
    bench("deploy_to_first_answer_max", deploys[-1], "s")
    bench("engine_start_to_first_answer", engine, "s")
    bench("deploy_over_engine_start", median / engine, "x")


if __name__ == "__main__":
    main()
