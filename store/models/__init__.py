"""Every table, so `Base.metadata` is complete wherever this package is imported."""

from store.models.audit import AuditEvent, AuditHead
from store.models.files import ModelFiles, ModelFilesEvent, ModelFilesLocation
from store.models.gateway import ApiKey, MaasModel, MaasTarget, RateLimitRule
from store.models.identity import Membership, User, UserToken, Workspace, WorkspaceRole
from store.models.plaza import ModelDeployTemplate, PlazaModel, Provider
from store.models.runtime import ServingEvent, ServingPlacement, ServingReplica
from store.models.stackops import JobEvent, JobStatus, RequestStatus, ServingRecord, StackJob, StackRequest
from store.models.usage import GatewayReplica, UsageInflight, UsageRecord, UsageRollup, UsageRollupState

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuditHead",
    "GatewayReplica",
    "JobEvent",
    "JobStatus",
    "MaasModel",
    "MaasTarget",
    "Membership",
    "ModelDeployTemplate",
    "ModelFiles",
    "ModelFilesEvent",
    "ModelFilesLocation",
    "PlazaModel",
    "Provider",
    "RateLimitRule",
    "RequestStatus",
    "ServingEvent",
    "ServingPlacement",
    "ServingRecord",
    "ServingReplica",
    "StackJob",
    "StackRequest",
    "UsageInflight",
    "UsageRecord",
    "UsageRollup",
    "UsageRollupState",
    "User",
    "UserToken",
    "Workspace",
    "WorkspaceRole",
]
