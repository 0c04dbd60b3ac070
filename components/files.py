"""`ModelFilesJob`: the Job that copies a model's files into one cluster region's store.

The Job is exactly the dict `fleet.files_job.stack_jobs` renders from the stack's model-files file;
this component only turns it into a `pulumi_kubernetes` Job with a stable logical name
(`files-<model>-<region>`, so a retry, whose Job has a new name, replaces the old Job), the region's
provider, this component as parent and a dependency on the region's namespace.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s

from fleet.files_job import StackFilesJob

TYPE = "modelfleet:index:ModelFilesJob"


def component_name(job: StackFilesJob) -> str:
    return f"files-{job.files}-{job.region}"


class ModelFilesJob(pulumi.ComponentResource):
    """One model-files request's copy Job in one region. Its progress is not a Pulumi output: the Job
    reports to the portal (`/api/model-files/{id}/regions/{region}:report`)."""

    job: k8s.batch.v1.Job
    job_name: pulumi.Output[str]

    def __init__(
        self,
        job: StackFilesJob,
        *,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        name = component_name(job)
        super().__init__(TYPE, name, None, opts)
        manifest = job.manifest
        if (manifest.get("apiVersion"), manifest.get("kind")) != ("batch/v1", "Job"):
            raise ValueError(f"model files {name!r}: expected a batch/v1 Job, got {manifest.get('kind')}")
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[*depends_on])
        self.job = k8s.batch.v1.Job(
            f"{name}-job", opts=child, metadata=manifest["metadata"], spec=manifest["spec"]
        )
        job_name = str(manifest["metadata"]["name"])
        self.job_name = self.job.urn.apply(lambda _: job_name)
        self.register_outputs({"jobName": self.job_name})
