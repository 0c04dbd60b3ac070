"""Helpers for the servings, jobs and backend tests: request bodies, git, and server-sent events."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from fastapi.testclient import TestClient

from portal.services import Services


def deploy(name: str, **overrides: Any) -> dict[str, Any]:
    """A small serving that fits the demo stack's H100 pool in cn-east (allowed for every workspace)."""
    body: dict[str, Any] = {
        "name": name,
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100"}],
    }
    body.update(overrides)
    return body


def workspaces(client: TestClient, *slugs: str) -> None:
    for slug in slugs:
        made = client.post("/api/workspaces", json={"slug": slug, "name": slug})
        assert made.status_code == 201, made.text


def git(services: Services, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(services.repository.root), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commits(services: Services) -> int:
    return int(git(services, "rev-list", "--count", "HEAD"))


def committed_file(services: Services, stack: str, name: str) -> str | None:
    path = f"stacks/{stack}/servings/{name}.yaml"
    listed = git(services, "ls-tree", "--name-only", "HEAD", "--", path)
    return git(services, "show", f"HEAD:{path}") + "\n" if listed else None


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events of a text/event-stream body: {"id", "event", "data"} (comments and retry skipped)."""
    out: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            out.append(fields)
    return out
