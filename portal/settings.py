"""Everything the portal reads from its environment, in one place (prefix `MODELFLEET_`).

The defaults are the embedded setup a newcomer gets from `make run`: SQLite and a local git
repository of stacks under `var/`, no external services.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class S3Credentials(BaseSettings):
    """Keys for one region's model store, named by the store's `credentials_secret`."""

    access_key_id: str
    secret_access_key: SecretStr
    region: str = "us-east-1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="where the embedded defaults keep their files")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file <data_dir>/modelfleet.db"
    )
    admin_token: SecretStr | None = Field(
        default=None, description="bootstrap admin token; generated and printed once when unset"
    )
    pepper: SecretStr | None = Field(
        default=None,
        description="server secret mixed into every stored key and token hash; "
        "default: generated once into <data_dir>/pepper",
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

    gateway_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where applications reach the OpenAI-compatible gateway; "
        "`python -m portal` defaults it to the address it listens on",
    )
    console_session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="how long a web console sign-in lasts (docs/console.md)"
    )

    demo: bool = Field(default=False, description="load the demo stack, seed catalog, workspace and user")

    # Gateway (the OpenAI-compatible data plane, gateway; docs/gateway/api.md).
    redis_url: str | None = Field(
        default=None, description="Redis for limits and quotas shared by replicas; unset: in process"
    )
    gateway_redis_prefix: str = Field(default="mf", description="key prefix in Redis ({mf} for Cluster)")
    gateway_on_redis_failure_requests: Literal["fail_closed", "local", "fail_open"] = "local"
    gateway_on_redis_failure_tokens: Literal["fail_closed", "local", "fail_open"] = Field(
        default="fail_closed", description="token limits and quotas; fail_closed answers 503"
    )
    gateway_on_redis_failure_concurrency: Literal["fail_closed", "local", "fail_open"] = "local"
    gateway_replicas: int = Field(
        default=1, ge=1, description="gateway processes sharing the load (the `local` fallback enforces 1/N)"
    )
    gateway_region: str | None = Field(
        default=None, description="this gateway's region: locality routing prefers targets there"
    )
    gateway_default_max_tokens: int = Field(
        default=1024, ge=1, description="tokens reserved for the output when a request sets no max_tokens"
    )
    gateway_max_attempts: int = Field(default=3, ge=1, description="upstream tries per request (failover)")
    gateway_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    gateway_read_timeout_seconds: float = Field(
        default=300.0, gt=0, description="longest silence from an upstream (first token included)"
    )
    gateway_max_connections: int = Field(default=1000, ge=1, description="upstream connection pool size")
    gateway_bill_prompt_without_output: bool = Field(
        default=True, description="bill the prompt of a stream cut before its first token"
    )
    gateway_snapshot_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often to look for key/model/limit edits by other processes"
    )
    gateway_snapshot_reload_seconds: float = Field(
        default=30.0, gt=0, description="full reload of keys, models and limits (safety net)"
    )
    gateway_simulate_servings: bool | None = Field(
        default=None,
        description="answer serving targets with the in-process engine SIMULATOR instead of their "
        "in-cluster endpoints; default: on with --demo",
    )
    usage_batch_size: int = Field(default=500, ge=1, description="usage rows per database write")
    usage_flush_seconds: float = Field(default=0.5, gt=0, description="longest wait before rows are written")
    usage_rollup_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often the portal folds new usage rows into the rollups"
    )
    usage_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="delete raw usage rows older than this once they are in the rollups "
        "(statistics keep them); unset: keep every row",
    )
    compare_max_models: int = Field(default=3, ge=1, le=10, description="models per /v1/compare request")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelfleet.db').resolve()}"

    @property
    def resolved_stacks_repo(self) -> Path:
        return self.stacks_repo or self.data_dir / "stacks-repo"
