"""The offline demo of model files: with `--demo`, the portal starts a stand-in hub and a local S3
stand-in (both named so in the log), publishes a tiny plaza model, and a request copies it into the
`local` region with the portal's own worker, no internet involved."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from benchmarks.processes import free_port
from portal.files.demo import MODEL_ID, REPOSITORY, _moto_server, _port_free
from portal.settings import Settings


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    """The demo, with its `local` store on a free port (the stack says 127.0.0.1:9000, which another
    demo on this machine may hold)."""
    repo = demo_repo_settings.stacks_repo
    assert repo is not None
    path = Path(repo) / demo_repo_settings.stacks_subdir / "Pulumi.demo.yaml"
    doc = yaml.safe_load(path.read_text())
    for region in doc["config"]["modelfleet:regions"]:
        if region["name"] == "local":
            region["model_store"]["endpoint"] = f"http://127.0.0.1:{free_port()}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "local store on a free port"], check=True)
    return demo_repo_settings.model_copy(update={"demo": True, "files_poll_seconds": 0.2})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_demo_copies_its_tiny_model_from_stand_ins(
    capsys: pytest.CaptureFixture[str], client: TestClient
) -> None:
    logged = capsys.readouterr().err  # what the portal printed while it started
    made = client.post("/api/model-files", json={"model": MODEL_ID, "regions": ["local"]})
    assert made.status_code == 202, made.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [loc] = client.get(f"/api/model-files/{made.json()['id']}").json()["locations"]
        if loc["state"] in ("ready", "failed"):
            break
        time.sleep(0.2)
    assert loc["state"] == "ready", loc
    assert "STAND-IN HUB (not Hugging Face)" in logged and REPOSITORY in logged
    assert "LOCAL S3 STAND-IN (moto's server, not a real store)" in logged


def test_a_store_port_taken_after_the_check_is_said_not_waited_on_forever() -> None:
    """Two demo portals starting at once both find the port free; the second's bind fails in moto's
    thread. It says so (moto's own start would wait forever), and a stopped store frees its port."""
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert not _moto_server("127.0.0.1", port).started()
    store = _moto_server("127.0.0.1", port)
    assert store.started()
    store.stop()
    assert _port_free("127.0.0.1", port)
