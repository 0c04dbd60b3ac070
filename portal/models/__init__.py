"""Every table, so `Base.metadata` is complete wherever this package is imported."""

from portal.models.audit import AuditEvent, AuditHead
from portal.models.gateway import ApiKey, MaasModel, MaasTarget, RateLimitRule
from portal.models.identity import Membership, User, UserToken, Workspace, WorkspaceRole
from portal.models.plaza import ModelDeployTemplate, PlazaModel, Provider
from portal.models.stackops import JobEvent, JobStatus, RequestStatus, ServingRecord, StackJob, StackRequest
from portal.models.usage import UsageRecord, UsageRollup, UsageRollupState

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuditHead",
    "JobEvent",
    "JobStatus",
    "MaasModel",
    "MaasTarget",
    "Membership",
    "ModelDeployTemplate",
    "PlazaModel",
    "Provider",
    "RateLimitRule",
    "RequestStatus",
    "ServingRecord",
    "StackJob",
    "StackRequest",
    "UsageRecord",
    "UsageRollup",
    "UsageRollupState",
    "User",
    "UserToken",
    "Workspace",
    "WorkspaceRole",
]
