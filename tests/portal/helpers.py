"""Small helpers for portal API tests: make a user with a role and act as them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient


def make_member(client: TestClient, username: str, workspace: str, role: str) -> str:
    """Create `username` (if new), give them `role` in `workspace`, and return a token for them."""
    created = client.post("/api/users", json={"username": username})
    assert created.status_code in (201, 409), created.text
    put = client.put(f"/api/workspaces/{workspace}/members", json={"username": username, "role": role})
    assert put.status_code == 200, put.text
    token = client.post(f"/api/users/{username}/tokens", json={"name": "test"})
    assert token.status_code == 201, token.text
    value: str = token.json()["token"]
    return value


@contextmanager
def as_user(client: TestClient, token: str) -> Iterator[None]:
    saved = client.headers["Authorization"]
    client.headers["Authorization"] = f"Bearer {token}"
    try:
        yield
    finally:
        client.headers["Authorization"] = saved
