"""Deleting a model-files request purges what it copied: in each region's store, the objects under the
request's folder that its copies wrote (tagged `modelfleet-digest` by the downloader, and matching
the request's include/exclude patterns) and every unfinished multipart upload there. Objects put by
hand and never verified by a copy are not the request's: they stay.

Files something else still reads are kept, and the answer says who: another request (of any stack)
whose copy into the same folder is not cancelled, or a serving (of any stack in the repository) whose
placement syncs from that folder (`fleet.sources.of`). The caller audits the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet import sources
from fleet.errors import IssuesError
from fleet.spec import Region
from portal.files import targets
from portal.files.listing import selected
from portal.files.stored import TAG
from portal.repository import StackRepository
from portal.settings import Settings
from store.models import ModelFiles, ModelFilesLocation


@dataclass(frozen=True)
class Target:
    """One region's folder to purge, as read from the request before it is forgotten."""

    region: str
    uri: str
    store: Region | None  # None: the region left the stack, so its store is unknown
    model_id: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    users: tuple[str, ...]  # who else reads the folder


@dataclass
class Outcome:
    purged: dict[str, dict[str, int]] = field(default_factory=dict)  # region -> objects, uploads
    kept: dict[str, str] = field(default_factory=dict)  # region -> why
    failed: list[str] = field(default_factory=list)  # regions whose store refused (kept too)

    def as_dict(self) -> dict[str, Any]:
        return {"purged": self.purged, "kept": self.kept}

    def describe(self) -> str:
        parts = [
            f"{r}: {n['objects']} object(s), {n['uploads']} unfinished upload(s) deleted"
            for r, n in self.purged.items()
        ]
        parts += [f"{r}: kept ({why})" for r, why in self.kept.items()]
        return "; ".join(parts) or "no region to purge"


def _same_store(a: Region, b: Region) -> bool:
    return a.model_store.endpoint.rstrip("/") == b.model_store.endpoint.rstrip("/")


def _servings_reading(repository: StackRepository, region: Region, uri: str) -> list[str]:
    found: list[str] = []
    for stack in repository.stacks():
        try:
            fleet = repository.snapshot(stack).fleet
        except IssuesError:
            continue  # a stack that does not build applies nothing
        for s in fleet.servings:
            model = fleet.models.get(s.name)
            if model is None:
                continue
            for p in s.placements:
                there = fleet.regions.get(p.region)
                if there is None or not _same_store(there, region):
                    continue
                if f"s3://{sources.of(s, there, model.id).location}".rstrip("/") == uri.rstrip("/"):
                    found.append(f"serving {s.name!r} in stack {stack!r} reads it")
                    break
    return found


def _requests_copying(session: Session, row: ModelFiles, uri: str) -> list[str]:
    others = session.execute(
        select(ModelFiles.id, ModelFiles.stack, ModelFilesLocation.region)
        .join(ModelFilesLocation, ModelFilesLocation.files_id == ModelFiles.id)
        .where(
            ModelFiles.id != row.id, ModelFilesLocation.uri == uri, ModelFilesLocation.state != "cancelled"
        )
    ).all()
    return [f"request {i} (stack {stack!r}, region {region!r}) copies it too" for i, stack, region in others]


def plan(session: Session, repository: StackRepository, row: ModelFiles) -> list[Target]:
    """What deleting `row` purges, region by region, with who else reads each folder."""
    try:
        regions = repository.snapshot(row.stack).fleet.regions
    except IssuesError:
        regions = {}
    out: list[Target] = []
    for loc in row.locations:
        store = regions.get(loc.region)
        users = _requests_copying(session, row, loc.uri)
        if store is not None:
            users += _servings_reading(repository, store, loc.uri)
        out.append(
            Target(
                loc.region, loc.uri, store, row.model_id, tuple(row.include), tuple(row.exclude), tuple(users)
            )
        )
    return out


def _purge(settings: Settings, target: Target, store: Region) -> dict[str, int]:
    bucket = targets.bucket(settings, store, target.model_id)
    s3 = bucket.client(connections=4, attempts=2, connect_timeout=5)  # an ops call waits on it
    folder = bucket.key("")  # `<prefix>/<model>/`: never a sibling folder sharing the name's start
    objects = uploads = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket, Prefix=folder):
        for item in page.get("Contents", []):
            key = str(item["Key"])
            if not selected(key.removeprefix(folder), target.include, target.exclude):
                continue
            tags = s3.get_object_tagging(Bucket=bucket.bucket, Key=key).get("TagSet", [])
            if not any(t["Key"] == TAG for t in tags):
                continue  # not written or verified by a copy: someone else's
            s3.delete_object(Bucket=bucket.bucket, Key=key)
            objects += 1
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket.bucket, Prefix=folder):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            uploads += 1
    return {"objects": objects, "uploads": uploads}


def purge(settings: Settings, plan: list[Target]) -> Outcome:
    """Delete what each target's request wrote, unless someone else reads it; never raises for a
    store that refuses (the region is kept, with the store's answer)."""
    outcome = Outcome()
    for target in plan:
        if target.users:
            outcome.kept[target.region] = "; ".join(target.users)
        elif target.store is None:
            outcome.kept[target.region] = "the region is no longer in the stack, so its store is unknown"
        else:
            try:
                outcome.purged[target.region] = _purge(settings, target, target.store)
            except (BotoCoreError, ClientError) as exc:
                outcome.kept[target.region] = (
                    f"the store at {target.store.model_store.endpoint} refused: {exc}"
                )
    return outcome


__all__ = ["Outcome", "Target", "plan", "purge"]
