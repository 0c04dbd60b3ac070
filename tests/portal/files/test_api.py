"""The model-files API and the control plane's worker, end to end: a plaza model requested into the
demo stack's `local` region (its store is moto's S3 server, its hub the stand-in) and a cluster region;
progress and history, sharing, refusals naming the field, gated failures, retry, cancel, delete and
their audit rows."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from fleet.kube import validate_manifest
from portal.files.standin import Bytes, Pattern, Repo, StandInHub, serve
from portal.files.worker import STALE_SECONDS, Worker, start_worker
from portal.services import Services
from portal.settings import S3Credentials, Settings
from portal.stacks.worker import run_once
from store.db import transaction, utcnow
from store.models import ModelFilesLocation
from tests.portal.files.conftest import KEYS
from tests.portal.plaza_support import audit_rows, create_model, provider
from tests.portal.stackops_support import git

MiB = 1 << 20
FILES = {
    "config.json": Bytes(b'{"architectures": ["Qwen3ForCausalLM"]}'),
    "tokenizer.json": Bytes(b"{}" * 8000),
    "model.safetensors": Pattern(11 * MiB, seed=2),
}


@pytest.fixture
def standin() -> Iterator[tuple[StandInHub, str]]:
    hub = StandInHub({"acme/tiny": Repo(dict(FILES)), "acme/gated": Repo(dict(FILES), gated=True)})
    with serve(hub.app()) as url:
        yield hub, url


@pytest.fixture
def settings(
    demo_repo_settings: Settings, standin: tuple[StandInHub, str], moto_url: str, s3: Any
) -> Settings:
    """The demo stack with its `local` region's store at moto (a bucket of its own) and hub at the
    stand-in."""
    repo = demo_repo_settings.stacks_repo
    assert repo is not None
    path = Path(repo) / demo_repo_settings.stacks_subdir / "Pulumi.demo.yaml"
    doc = yaml.safe_load(path.read_text())
    bucket = f"local-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    for region in doc["config"]["modelfleet:regions"]:
        if region["name"] == "local":
            region["model_store"] = {
                **region["model_store"],
                "endpoint": moto_url,
                "bucket": bucket,
                "prefix": "models",
            }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "local store at moto"], check=True)
    creds = S3Credentials(
        access_key_id=KEYS["aws_access_key_id"], secret_access_key=KEYS["aws_secret_access_key"]
    )  # type: ignore[arg-type]
    return demo_repo_settings.model_copy(
        update={
            "files_hf_endpoint": standin[1],
            "files_worker_enabled": False,  # the test drives the worker's passes
            "files_report_url": "https://portal.example.com",
            "s3_credentials": {"model-store-credentials": creds},
        }
    )


def _bucket(services: Services) -> str:
    doc = services.repository.snapshot("demo").fleet.regions["local"].model_store
    return doc.bucket


def _until(
    worker: Worker, client: TestClient, files_id: int, region: str, states: set[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker.run_once()
        body: dict[str, Any] = client.get(f"/api/model-files/{files_id}").json()
        loc = next(loc for loc in body["locations"] if loc["region"] == region)
        if loc["state"] in states:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{region} never reached {states}: {body}")


def test_a_requested_model_is_copied_into_the_local_region_and_waits_for_a_job_on_a_cluster(
    client: TestClient, services: Services, s3: Any
) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    made = client.post("/api/model-files", json={"model": "tiny", "regions": ["local", "cn-east"]})
    assert made.status_code == 202, made.text
    body = made.json()
    assert {loc["region"]: loc["state"] for loc in body["locations"]} == {
        "local": "queued",
        "cn-east": "queued",
    }
    assert [loc["uri"] for loc in body["locations"] if loc["region"] == "local"] == [
        f"s3://{_bucket(services)}/models/tiny"
    ]
    worker = Worker(services)
    done = _until(worker, client, body["id"], "local", {"ready", "failed"})
    local = next(loc for loc in done["locations"] if loc["region"] == "local")
    assert local["state"] == "ready", local
    total = sum(b.size for b in FILES.values())
    assert (local["bytes_done"], local["bytes_total"], local["files_done"], local["files_total"]) == (
        total,
        total,
        3,
        3,
    )
    assert done["commit"] == Repo({}).sha  # `main` pinned to the commit the hub resolved it to
    states = [e["state"] for e in reversed(done["history"]) if e["region"] == "local"]
    assert states[0] == "queued" and states[1] == "downloading" and states[-1] == "ready"
    cluster = next(loc for loc in done["locations"] if loc["region"] == "cn-east")
    assert cluster["state"] == "queued"  # a cluster region is downloaded by its Job, not by the portal
    got = s3.get_object(Bucket=_bucket(services), Key="models/tiny/model.safetensors")["Body"].read()
    assert got == FILES["model.safetensors"].read(0, FILES["model.safetensors"].size)
    assert [a.detail for a in audit_rows(services, "RequestModelFiles")] == ["tiny into local, cn-east"]
    assert [a.detail for a in audit_rows(services, "ModelFilesReady")] == ["tiny in local"]
    # Asking again for the same files joins what is there: nothing is queued twice.
    again = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"]})
    assert again.status_code == 202 and again.json()["shared"] == ["local"]
    seen = client.get("/api/model-files:availability", params={"model": "tiny"}).json()
    assert {a["region"]: a["state"] for a in seen} == {"local": "ready", "cn-east": "queued"}


def test_a_gated_model_fails_with_its_reason_and_can_be_retried_cancelled_and_deleted(
    client: TestClient, services: Services
) -> None:
    provider(client)
    create_model(client, "gated", source_uri="hf://acme/gated")
    body = client.post("/api/model-files", json={"model": "gated", "regions": ["local"]}).json()
    worker = Worker(services)
    failed = _until(worker, client, body["id"], "local", {"failed", "ready"})
    local = failed["locations"][0]
    assert local["state"] == "failed" and "is gated (401)" in local["reason"]
    assert local["reason"].startswith("acme/gated: ")
    assert audit_rows(services, "ModelFilesFailed")[0].result == "failure"
    retried = client.post(f"/api/model-files/{body['id']}:retry", json={})
    assert retried.status_code == 200 and retried.json()["locations"][0]["state"] == "queued"
    cancelled = client.post(f"/api/model-files/{body['id']}:cancel", json={"regions": ["local"]})
    assert cancelled.status_code == 200 and cancelled.json()["locations"][0]["state"] == "cancelled"
    assert client.post(f"/api/model-files/{body['id']}:cancel", json={}).status_code == 409
    assert client.delete(f"/api/model-files/{body['id']}").status_code == 200
    assert client.get(f"/api/model-files/{body['id']}").status_code == 404
    actions = [
        a.action for a in audit_rows(services, "RetryModelFiles") + audit_rows(services, "CancelModelFiles")
    ]
    assert actions == ["RetryModelFiles", "CancelModelFiles"]
    assert len(audit_rows(services, "DeleteModelFiles")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "nope", "regions": ["local"]}, "model"),
        ({"model": "tiny", "regions": ["local", "mars"]}, "regions[1]"),
        ({"model": "tiny", "regions": []}, "regions"),
        ({"model": "tiny", "regions": ["local"], "include": ["../x"]}, "include[0]"),
        ({"model": "tiny", "regions": ["local"], "source": "hf"}, "repository"),
        ({"model": "tiny", "regions": ["local"], "source": "hf", "repository": "not a repo"}, "repository"),
        (
            {
                "model": "tiny",
                "regions": ["local"],
                "source": "https",
                "repository": "https://x/y.bin",
                "revision": "v1",
            },
            "revision",
        ),
        ({"model": "tiny", "regions": ["local"], "source": "ftp", "repository": "x"}, "source"),
        ({"model": "tiny", "regions": ["local"], "colour": "red"}, "colour"),
    ],
)
def test_every_bad_input_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    r = client.post("/api/model-files", json=body)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["error"]["fields"]], r.json()


def test_another_revision_while_a_copy_runs_is_a_conflict(client: TestClient) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    assert client.post("/api/model-files", json={"model": "tiny", "regions": ["local"]}).status_code == 202
    r = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"], "revision": "v2"})
    assert r.status_code == 409 and "cancel that copy" in r.json()["error"]["message"]


def test_model_files_are_for_ops(client: TestClient, services: Services) -> None:
    r = client.get("/api/model-files", headers={"Authorization": "Bearer mf_nobody"})
    assert r.status_code == 401


def test_a_cluster_region_gets_a_checked_job_whose_reports_move_its_state(
    client: TestClient, services: Services
) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    files_id = client.post(
        "/api/model-files", json={"model": "tiny", "regions": ["cn-east", "local"]}
    ).json()["id"]
    job = client.get(f"/api/model-files/{files_id}/regions/cn-east/job")
    assert job.status_code == 200, job.text
    manifest = job.json()
    assert manifest["kind"] == "Job" and manifest["metadata"]["namespace"] == "modelfleet"
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--files-id") + 1] == str(files_id) and "--report-url" in args
    assert (
        client.get(f"/api/model-files/{files_id}/regions/local/job").status_code == 409
    )  # the portal copies it
    url = f"/api/model-files/{files_id}/regions/cn-east:report"
    r = client.post(url, json={"state": "downloading", "bytes_done": 5, "bytes_total": 10, "files_total": 3})
    assert r.status_code == 200 and (r.json()["state"], r.json()["attempt"], r.json()["bytes_done"]) == (
        "downloading",
        1,
        5,
    )
    assert (
        client.post(f"/api/model-files/{files_id}:cancel", json={"regions": ["cn-east"]}).status_code == 200
    )
    r = client.post(url, json={"state": "downloading", "bytes_done": 7, "bytes_total": 10})
    assert r.json()["cancel_requested"] is True  # the Job learns of the cancel from the answer
    r = client.post(url, json={"state": "cancelled", "reason": "cancelled by request"})
    assert r.json()["state"] == "cancelled"
    assert client.post(url, json={"state": "downloading"}).status_code == 409
    assert client.post(f"/api/model-files/{files_id}:retry", json={"regions": ["cn-east"]}).status_code == 200
    r = client.post(url, json={"state": "ready", "bytes_done": 10, "bytes_total": 10, "commit": "ab" * 20})
    assert r.json()["state"] == "ready"
    assert client.get(f"/api/model-files/{files_id}").json()["commit"] == "ab" * 20
    bad = client.post(url, json={"state": "exploded"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "state"
    assert "tiny in cn-east" in [a.detail for a in audit_rows(services, "ModelFilesReady")]


def test_a_copy_left_by_a_stopped_worker_resumes_and_follow_streams_it(
    client: TestClient, services: Services, standin: tuple[StandInHub, str]
) -> None:
    """A worker that dies mid-copy leaves `downloading` behind; the next one takes it over (at once on
    the embedded SQLite, after the heartbeat goes stale elsewhere) and resumes from the store."""
    hub = standin[0]
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    files_id = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"]}).json()["id"]
    hub.delay = 0.01  # slow enough to stop it halfway
    first = Worker(services)
    first.run_once()
    deadline = time.monotonic() + 30
    while hub.served < 6 * MiB and time.monotonic() < deadline:
        time.sleep(0.05)
    first.stop()  # as if the process died: its download stops, its row still says downloading
    for running in first.running.values():
        with contextlib.suppress(Exception):
            running.download.wait(30)
    served = hub.served
    hub.delay = 0
    with transaction(services.sessions) as session:
        for loc in session.scalars(select(ModelFilesLocation)):
            loc.heartbeat_at = utcnow() - timedelta(seconds=STALE_SECONDS + 1)
    second = Worker(services)
    done = _until(second, client, files_id, "local", {"ready", "failed"})
    assert done["locations"][0]["state"] == "ready" and done["locations"][0]["attempt"] == 2
    assert hub.served - served < sum(b.size for b in FILES.values())  # finished parts were kept
    reasons = [e["reason"] for e in done["history"]]
    assert "the worker holding it stopped; resuming" in reasons
    with client.stream("GET", f"/api/model-files/{files_id}/follow") as stream:
        text = "".join(stream.iter_text())
    assert "event: files" in text and '"state": "ready"' in text and "event: end" in text


def test_other_files_for_a_model_queue_every_region_again(client: TestClient) -> None:
    """A region never reads `ready` for files other than the request's: asking for another revision
    (nothing running) queues the regions asked before too."""
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    files_id = client.post("/api/model-files", json={"model": "tiny", "regions": ["cn-east"]}).json()["id"]
    url = f"/api/model-files/{files_id}/regions/cn-east:report"
    assert client.post(url, json={"state": "ready", "bytes_done": 1, "bytes_total": 1}).status_code == 200
    again = client.post("/api/model-files", json={"model": "tiny", "regions": ["cn-south"], "revision": "v2"})
    assert again.status_code == 202
    states = {loc["region"]: (loc["state"], loc["reason"]) for loc in again.json()["locations"]}
    assert states == {
        "cn-east": ("queued", "the requested files changed (source, revision or patterns)"),
        "cn-south": ("queued", "requested"),
    }
    assert again.json()["revision"] == "v2" and again.json()["commit"] is None


# -- cluster regions: the request is desired state in git, applied by `pulumi up` --------------------


def _files_file(services: Services, model: str) -> dict[str, Any] | None:
    path = f"stacks/demo/model-files/{model}.yaml"
    listed = git(services, "ls-tree", "--name-only", "HEAD", "--", path)
    return yaml.safe_load(git(services, "show", f"HEAD:{path}")) if listed else None


def test_a_cluster_region_copy_is_a_committed_stack_file_that_renders_a_checked_job(
    client: TestClient, services: Services
) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    made = client.post(
        "/api/model-files", json={"model": "tiny", "regions": ["cn-east", "cn-north", "local"]}
    )
    assert made.status_code == 202, made.text
    files_id = made.json()["id"]
    assert run_once(services) == 1  # the stack worker commits it like a serving change
    doc = _files_file(services, "tiny")
    assert doc is not None
    assert (doc["id"], doc["source"], doc["repository"]) == (files_id, "hf", "acme/tiny")
    assert doc["regions"] == [{"name": "cn-east", "attempt": 1}, {"name": "cn-north", "attempt": 1}]
    assert doc["report_url"] == "https://portal.example.com"  # `local` is copied by the portal itself
    subject = git(services, "log", "-1", "--format=%s")
    assert subject == "portal: 1 model-files change(s) on stack demo"
    # What `pulumi up` applies: the stack at HEAD renders one schema-valid Job per cluster region,
    # the very Job the API shows.
    snapshot = services.repository.snapshot("demo")
    jobs = {j.region: j.manifest for j in snapshot.rendering.files_jobs}
    assert set(jobs) == {"cn-east", "cn-north"}
    for manifest in jobs.values():
        assert validate_manifest(manifest, snapshot.fleet.platform.kubernetes_version) == []
    shown = client.get(f"/api/model-files/{files_id}/regions/cn-east/job").json()
    assert shown == jobs["cn-east"]
    queued = audit_rows(services, "QueueModelFilesStackUpdate")
    assert [a.detail.split(": ", 1)[1] for a in queued] == ["write demo/model-files/tiny.yaml"]
    assert audit_rows(services, "ApplyStackUpdate")[-1].result == "success"
    # The Job reports; ops cancel one region: the file loses it, the stack update deletes its Job,
    # and the Job still running is told to stop.
    url = f"/api/model-files/{files_id}/regions/cn-east:report"
    assert client.post(url, json={"state": "downloading", "bytes_total": 10}).json()["attempt"] == 1
    cancelled = client.post(f"/api/model-files/{files_id}:cancel", json={"regions": ["cn-east"]})
    assert cancelled.status_code == 200
    assert run_once(services) == 1
    doc = _files_file(services, "tiny")
    assert doc is not None and doc["regions"] == [{"name": "cn-north", "attempt": 1}]
    told = client.post(url, json={"state": "downloading", "bytes_done": 3})
    assert told.status_code == 200 and told.json()["cancel_requested"] is True
    assert client.post(url, json={"state": "cancelled"}).json()["state"] == "cancelled"
    # A retry is a new attempt: a new Job name, so `pulumi up` replaces the old Job.
    assert client.post(f"/api/model-files/{files_id}:retry", json={"regions": ["cn-east"]}).status_code == 200
    assert run_once(services) == 1
    doc = _files_file(services, "tiny")
    assert doc is not None and {"name": "cn-east", "attempt": 2} in doc["regions"]
    names = {
        j.region: j.manifest["metadata"]["name"]
        for j in services.repository.snapshot("demo").rendering.files_jobs
    }
    assert names["cn-east"] != jobs["cn-east"]["metadata"]["name"]
    # Deleting the request removes the file, and with it every Job.
    assert client.delete(f"/api/model-files/{files_id}").status_code == 200
    assert run_once(services) == 1
    assert _files_file(services, "tiny") is None
    assert services.repository.snapshot("demo").rendering.files_jobs == ()
    assert [a.detail.split(": ", 1)[1] for a in audit_rows(services, "QueueModelFilesStackUpdate")][-1] == (
        "remove demo/model-files/tiny.yaml"
    )


def test_a_local_only_request_writes_no_stack_file(client: TestClient, services: Services) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    assert client.post("/api/model-files", json={"model": "tiny", "regions": ["local"]}).status_code == 202
    assert run_once(services) == 0
    assert audit_rows(services, "QueueModelFilesStackUpdate") == []


def test_cluster_regions_need_the_report_url(client: TestClient, services: Services) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    services.settings = services.settings.model_copy(update={"files_report_url": None})
    r = client.post("/api/model-files", json={"model": "tiny", "regions": ["cn-east"]})
    assert r.status_code == 409 and "MODELFLEET_FILES_REPORT_URL" in r.json()["error"]["message"]
    assert client.get("/api/model-files").json()["total"] == 0  # nothing half-done


# -- delete purges what the request copied, unless something else reads it --------------------------


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_deleting_a_request_purges_what_its_copies_wrote_and_nothing_else(
    client: TestClient, services: Services, s3: Any
) -> None:
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    files_id = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"]}).json()["id"]
    assert _until(Worker(services), client, files_id, "local", {"ready", "failed"})["locations"][0][
        "state"
    ] == ("ready")
    bucket = _bucket(services)
    s3.put_object(Bucket=bucket, Key="models/tiny/NOTES.md", Body=b"put by hand")  # not the request's
    s3.put_object(Bucket=bucket, Key="models/tiny-2/config.json", Body=b"{}", Tagging="modelfleet-digest=x")
    unfinished = s3.create_multipart_upload(Bucket=bucket, Key="models/tiny/extra.safetensors")["UploadId"]
    assert len(_keys(s3, bucket, "models/tiny/")) == 4
    gone = client.delete(f"/api/model-files/{files_id}")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"id": files_id, "purged": {"local": {"objects": 3, "uploads": 1}}, "kept": {}}
    assert _keys(s3, bucket, "models/tiny/") == ["models/tiny/NOTES.md"]
    assert _keys(s3, bucket, "models/tiny-2/") == ["models/tiny-2/config.json"]  # a sibling folder
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix="models/tiny/").get("Uploads", [])
    assert unfinished not in [u["UploadId"] for u in uploads]
    (row,) = audit_rows(services, "PurgeModelFiles")
    assert row.result == "success" and row.after == {
        "purged": {"local": {"objects": 3, "uploads": 1}},
        "kept": {},
    }
    assert row.detail == "tiny: local: 3 object(s), 1 unfinished upload(s) deleted"


def test_files_a_serving_reads_are_kept_and_the_answer_says_who_reads_them(
    client: TestClient, services: Services, s3: Any
) -> None:
    """The demo stack's `qwen25-7b-local` serves catalog model `qwen2.5-7b-instruct` in `local`: it
    syncs `<store>/models/qwen2.5-7b-instruct`, the folder a request of that model fills."""
    provider(client)
    create_model(client, "qwen2.5-7b-instruct", source_uri="hf://acme/tiny")
    body = client.post("/api/model-files", json={"model": "qwen2.5-7b-instruct", "regions": ["local"]}).json()
    _until(Worker(services), client, body["id"], "local", {"ready", "failed"})
    bucket = _bucket(services)
    before = _keys(s3, bucket, "models/qwen2.5-7b-instruct/")
    assert len(before) == 3
    gone = client.delete(f"/api/model-files/{body['id']}")
    assert gone.status_code == 200, gone.text
    assert gone.json()["purged"] == {}
    assert gone.json()["kept"] == {"local": "serving 'qwen25-7b-local' in stack 'demo' reads it"}
    assert _keys(s3, bucket, "models/qwen2.5-7b-instruct/") == before
    assert "kept (serving 'qwen25-7b-local'" in audit_rows(services, "PurgeModelFiles")[0].detail


# -- two requests sharing one download: cancelling one lets go, the other goes on -----------------------


def test_cancelling_one_of_two_requests_sharing_a_download_leaves_the_other_running(
    client: TestClient, services: Services, standin: tuple[StandInHub, str]
) -> None:
    """A second stack whose `local` region has the same store: its request for the same files into
    the same folder shares the first one's download (one request per stack and model)."""
    hub = standin[0]
    stacks = services.repository.stacks_dir
    (stacks / "Pulumi.twin.yaml").write_text((stacks / "Pulumi.demo.yaml").read_text())
    git(services, "add", "-A")
    git(services, "commit", "-qm", "a twin stack, same stores")
    provider(client)
    create_model(client, "tiny", source_uri="hf://acme/tiny")
    hub.delay = 0.05  # about 2 s for the weights: time to cancel one request mid-copy
    first = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"], "stack": "demo"})
    second = client.post("/api/model-files", json={"model": "tiny", "regions": ["local"], "stack": "twin"})
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    worker = Worker(services)
    worker.run_once()  # both copies start; the second joins the first's run
    assert len(worker.running) == 2
    (a, b) = worker.running.values()
    assert a.download is b.download and a.download.sharers == 2
    cancelled = client.post(f"/api/model-files/{first.json()['id']}:cancel", json={})
    assert cancelled.status_code == 200
    gone = _until(worker, client, first.json()["id"], "local", {"cancelled", "ready", "failed"})
    assert gone["locations"][0]["state"] == "cancelled"
    assert not b.download.cancel_event.is_set()  # the shared run goes on for the other request
    done = _until(worker, client, second.json()["id"], "local", {"ready", "failed", "cancelled"})
    assert done["locations"][0]["state"] == "ready", done
    assert hub.served == sum(b.size for b in FILES.values())  # every byte once


def test_stopping_the_worker_does_not_wait_out_its_poll(services: Services) -> None:
    """Every portal's shutdown stops the worker: a stop that slept out the poll held each one (and
    every test's teardown) for up to `files_poll_seconds`."""
    stop = start_worker(services, poll_seconds=60)
    time.sleep(0.2)  # the loop has made its first pass and sleeps on the poll
    started = time.monotonic()
    stop()
    assert time.monotonic() - started < 10
