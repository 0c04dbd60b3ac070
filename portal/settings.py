"""Everything the portal reads from its environment, in one place (prefix `MODELFLEET_`).

The defaults are the embedded setup a newcomer gets from `make run`: SQLite and a local git
repository of stacks under `var/`, no external services.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings


class S3Credentials(BaseSettings):
    """Keys for one region's model store, named by the store's `credentials_secret`."""

    access_key_id: str
    secret_access_key: SecretStr
    region: str = "us-east-1"


class Settings(GatewaySettings):
    """The control plane's settings: the shared and the gateway's (it serves `/v1` in process) and its own."""

    admin_token: SecretStr | None = Field(
        default=None, description="bootstrap admin token; generated and printed once when unset"
    )

    # Stacks: where desired state lives and how changes reach it.
    stacks_repo: Path | None = Field(
        default=None, description="local git repository of stacks; default <data_dir>/stacks-repo"
    )
    stacks_subdir: str = Field(default="stacks", description="folder of the repository holding stack files")
    stack_backend: Literal["git", "pull-request", "pulumi"] = "git"
    git_author: str = "modelfleet-portal <portal@modelfleet.local>"
    worker_enabled: bool = Field(default=True, description="apply queued stack updates in this process")
    worker_poll_seconds: float = 0.5
    local_runtime_enabled: bool = Field(
        default=True,
        description="supervise the engine processes of `local` regions in this process (docs/ops-guide.md)",
    )

    # pull-request backend: a GitHub-compatible REST API.
    github_api_url: str = "https://api.github.com"
    github_repository: str | None = Field(default=None, description="owner/name")
    github_token: SecretStr | None = None
    github_base_branch: str = "main"
    github_webhook_secret: SecretStr | None = None

    # pulumi backend: the Automation API over a local program directory.
    pulumi_work_dir: Path | None = Field(default=None, description="folder holding Pulumi.yaml")
    pulumi_backend_url: str | None = None

    # OIDC: bearer JWTs from an identity provider.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = Field(default=None, description="default: the issuer's discovery document")
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: list[str] = Field(default_factory=lambda: ["modelfleet-admins"])
    oidc_workspace_group_pattern: str = Field(
        default=r"^modelfleet:(?P<workspace>[a-z0-9][a-z0-9-]*):(?P<role>admin|member)$",
        description="groups matching this regex grant workspace roles",
    )

    # S3 preflight: credentials per model store `credentials_secret` name; the default chain otherwise.
    s3_credentials: dict[str, S3Credentials] = Field(default_factory=dict)
    s3_timeout_seconds: float = 5.0

    # Model files (docs/ops-guide.md#model-files): hub tokens by the regions' `model_hub.token_secret`
    # ("<secret name>/<key>"), the hubs a region without its own endpoint uses, and the worker that
    # downloads into `local` regions' stores.
    hub_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    files_hf_endpoint: str = Field(default="https://huggingface.co", pattern=r"^https?://[^\s/]+")
    files_modelscope_endpoint: str = Field(default="https://www.modelscope.cn", pattern=r"^https?://[^\s/]+")
    files_worker_enabled: bool = True
    files_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    files_job_image: str = Field(
        default="ghcr.io/modelfleet/portal:latest", description="the image cluster regions' copy Jobs run"
    )
    files_report_url: str | None = Field(
        default=None, description="the portal's URL as clusters reach it (copy Jobs report there)"
    )

    # The kubernetes observer: read-only access to each region's cluster, by the name the region
    # gives its access (`cluster.kubeconfig_secret`, else `cluster.context`).
    kubeconfigs: dict[str, str] = Field(
        default_factory=dict,
        description="a kubeconfig file (or `in-cluster`: the portal pod's service account) per region "
        "access name; regions without one are not watched",
    )
    observer_watch_seconds: int = Field(
        default=300, ge=10, le=1800, description="timeoutSeconds of each watch request before it resumes"
    )

    # Audit (docs/portal/keys-maas-limits-audit.md): the keys that seal the chain and its checkpoints.
    audit_keys: dict[str, SecretStr] | None = Field(
        default=None,
        description='audit chain keys by id ({"1": "…"}), shared by every portal replica; '
        "default: generated once into <data_dir>/audit-keys/",
    )
    audit_key_id: str | None = Field(
        default=None, description="the key new audit rows use; default: highest id"
    )
    audit_checkpoint_dir: Path | None = Field(
        default=None,
        description="where signed checkpoints of the audit chain are written (outside the database); "
        "default <data_dir>/audit-checkpoints",
    )
    audit_checkpoint_seconds: float = Field(
        default=60.0, gt=0, description="how often the portal writes a checkpoint when the chain grew"
    )

    allow_private_urls: bool | None = Field(
        default=None,
        description="let MaaS upstream and plaza import URLs reach loopback and private addresses "
        "(portal/addresses.py); default: on with --demo",
    )
    plaza_import_deadline_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="longest a plaza import from a URL may take, all reads included",
    )
    plaza_import_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, description="largest index fetched")
    plaza_import_concurrency: int = Field(
        default=4, ge=1, description="imports from URLs at once per portal process; more: 503"
    )

    portal_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body the portal's API accepts; larger: 413"
    )

    gateway_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where applications reach the OpenAI-compatible gateway; "
        "`python -m portal` defaults it to the address it listens on",
    )
    console_session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="how long a web console sign-in lasts (docs/console.md)"
    )

    usage_rollup_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often the portal folds new usage rows into the rollups"
    )
    usage_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="delete raw usage rows older than this once they are in the rollups "
        "(statistics keep them); unset: keep every row",
    )

    @property
    def private_urls_allowed(self) -> bool:
        return self.demo if self.allow_private_urls is None else self.allow_private_urls

    @property
    def resolved_audit_checkpoint_dir(self) -> Path:
        return self.audit_checkpoint_dir or self.data_dir / "audit-checkpoints"

    @property
    def resolved_stacks_repo(self) -> Path:
        return self.stacks_repo or self.data_dir / "stacks-repo"
