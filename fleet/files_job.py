"""The Kubernetes Job that copies a model's files into a cluster region's store.

It runs the control plane's own downloader (`python -m portal.files copy`, in the portal image) next
to the store, so the bytes go hub → region store without passing through the control plane; it
reports progress back to the portal's API (`--report-url`, the token from a Secret). The store keys
come from the region's `model_store.credentials_secret`, the hub's mirror and token from
`model_hub`, exactly as the servings' model-fetch gets them (`fleet.sources`). Memory is bounded by
the downloader's parts in flight, and it needs no disk: the root filesystem is read-only.

A restarted pod resumes (finished files and parts are in the store), so `backoffLimit` retries are
cheap; the Job's name carries the request id and attempt so a retry is a new Job.

The portal writes each request as a stack file (`stacks/<stack>/model-files/<model>.yaml`,
`fleet.spec.ModelFiles`); `stack_jobs` renders its Jobs, which `pulumi up` applies like every other
object. Those Jobs are owned by the stack: no TTL (the cluster deleting a finished Job would make the
next update copy again) and no await (`pulumi up` does not wait hours for a download; the Job reports
its progress to the portal instead).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from fleet.spec import ModelFiles, Region, SecretKey
from fleet.stack import Fleet

Manifest = dict[str, Any]
BACKOFF_LIMIT = 6
TTL_SECONDS = 24 * 3600  # kept a day for its logs, then collected
MEMORY = "512Mi"  # 8 parts of 8 MiB plus 4 small files in flight, the interpreter and its clients


@dataclass(frozen=True)
class FilesJob:
    """One request's copy into one region."""

    files_id: int
    attempt: int
    model_id: str
    source: str  # hf | modelscope | s3 | https
    repository: str
    revision: str
    image: str  # the portal's image: it holds the downloader
    report_url: str  # the portal's base URL as the cluster reaches it
    report_token: SecretKey  # an ops token, in the region's namespace
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    ttl_seconds: int | None = TTL_SECONDS  # None: kept until whoever applied it deletes it
    annotations: dict[str, str] = field(default_factory=dict)


# A stack's Jobs: Pulumi neither waits for them to finish nor outlives them with a TTL.
STACK_ANNOTATIONS = {"pulumi.com/skipAwait": "true"}


def job_name(job: FilesJob, region: Region) -> str:
    """`model-files-<id>-<attempt>-<hash>`: unique per request, region and attempt, ≤ 63 characters."""
    digest = hashlib.sha256(f"{job.model_id}/{region.name}".encode()).hexdigest()[:8]
    return f"model-files-{job.files_id}-{job.attempt}-{digest}"


def _prefix(region: Region, model_id: str) -> str:
    store = region.model_store
    return f"{store.prefix}/{model_id}" if store.prefix else model_id


def argv(job: FilesJob, region: Region) -> list[str]:
    """The downloader's command line: every value one argv item, never through a shell."""
    hub = region.model_hub
    out = [
        "python",
        "-m",
        "portal.files",
        "copy",
        "--source",
        job.source,
        "--repository",
        job.repository,
        "--store-endpoint",
        region.model_store.endpoint,
        "--bucket",
        region.model_store.bucket,
        "--prefix",
        _prefix(region, job.model_id),
        "--report-url",
        job.report_url,
        "--files-id",
        str(job.files_id),
        "--region",
        region.name,
    ]
    if job.revision:
        out += ["--revision", job.revision]
    endpoint = (
        hub.hf_endpoint
        if job.source == "hf"
        else hub.modelscope_endpoint
        if job.source == "modelscope"
        else None
    )
    if endpoint is not None:
        out += ["--endpoint", endpoint]
    for pattern in job.include:
        out += ["--include", pattern]
    for pattern in job.exclude:
        out += ["--exclude", pattern]
    return out


def _env(job: FilesJob, region: Region) -> list[Manifest]:
    store = region.model_store.credentials_secret
    env: list[Manifest] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": store, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    token = region.model_hub.token_secret
    if token is not None and job.source in ("hf", "modelscope"):
        name = "HF_TOKEN" if job.source == "hf" else "MODELSCOPE_API_TOKEN"
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    ref = {"name": job.report_token.name, "key": job.report_token.key}
    env.append({"name": "MODELFLEET_REPORT_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    return env


def files_job(job: FilesJob, region: Region) -> Manifest:
    """The batch/v1 Job for `job` in `region`'s namespace."""
    labels = {
        "app.kubernetes.io/name": "modelfleet-model-files",
        "app.kubernetes.io/managed-by": "modelfleet",
        "modelfleet.io/model-files": str(job.files_id),
        **job.labels,
    }
    container: Manifest = {
        "name": "copy",
        "image": job.image,
        "args": argv(job, region),
        "env": _env(job, region),
        "resources": {
            "requests": {"cpu": "1", "memory": MEMORY},
            "limits": {"memory": MEMORY},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    metadata: Manifest = {"name": job_name(job, region), "namespace": region.namespace, "labels": labels}
    if job.annotations:
        metadata["annotations"] = dict(job.annotations)
    spec: Manifest = {"backoffLimit": BACKOFF_LIMIT}
    if job.ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = job.ttl_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **spec,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }


@dataclass(frozen=True, slots=True)
class StackFilesJob:
    """A stack's model-files Job for one region."""

    files: str  # the model-files name (the model's id)
    region: str
    manifest: Manifest


def from_spec(files: ModelFiles, attempt: int) -> FilesJob:
    return FilesJob(
        files_id=files.id,
        attempt=attempt,
        model_id=files.name,
        source=files.source,
        repository=files.repository,
        revision=files.revision,
        image=files.image,
        report_url=files.report_url,
        report_token=files.report_token,
        include=files.include,
        exclude=files.exclude,
        ttl_seconds=None,
        annotations=dict(STACK_ANNOTATIONS),
    )


def stack_jobs(fleet: Fleet) -> tuple[StackFilesJob, ...]:
    """Every model-files request's Job per listed region, in file and region order."""
    return tuple(
        StackFilesJob(
            files.name, target.name, files_job(from_spec(files, target.attempt), fleet.regions[target.name])
        )
        for files in fleet.model_files
        for target in files.regions
    )


__all__ = ["FilesJob", "StackFilesJob", "argv", "files_job", "from_spec", "job_name", "stack_jobs"]
