"""Helpers for the plaza tests: request bodies, and the demo stack committed into a test repository."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from portal.bootstrap import DEMO_STACKS
from portal.services import Services
from store.models import AuditEvent


def install_demo_stack(services: Services) -> None:
    """Commit the demo stack (stacks/Pulumi.demo.yaml and its servings) into the portal's repository."""
    repo = services.repository
    shutil.copytree(DEMO_STACKS, repo.stacks_dir, dirs_exist_ok=True)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "demo stack")


def provider(client: TestClient, provider_id: str = "acme", name: str = "Acme") -> dict[str, Any]:
    created = client.post("/api/plaza/providers", json={"id": provider_id, "name": name})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def model_body(model_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": model_id,
        "name": model_id.upper(),
        "provider": "acme",
        "capabilities": ["text-generation"],
    }
    body.update(fields)
    return body


def create_model(client: TestClient, model_id: str, **fields: Any) -> dict[str, Any]:
    created = client.post("/api/plaza/models", json=model_body(model_id, **fields))
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def audit_rows(services: Services, action: str) -> list[AuditEvent]:
    with services.sessions() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
        )
