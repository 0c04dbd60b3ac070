"""Signed checkpoints of the audit chain, kept outside the database.

The keyed chain shows any row that was changed; it cannot show rows cut from its end when the head
row is moved back with them, nor (for rows written before keys existed) a prefix rehashed with plain
SHA-256. A checkpoint can: it records the chain's head (id and hash) at a moment, signed with the
audit key, in a file under `audit_checkpoint_dir` — a directory the database's writers do not reach
(mount a separate, ideally append-only, volume there in production). Verification then needs the
chain to reach the newest checkpoint's row with the very hash it recorded.

The portal writes one at start, every `audit_checkpoint_seconds` while the chain grows (one of the
app's STARTERS), and after each successful verification. The newest `KEEP` files are kept and the
chain must match every one of them, so a tail cut while no portal ran is caught by the older
checkpoints even after a restart wrote a new one at the shortened head.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from portal import audit
from portal.audit import Checkpoint
from portal.audit_keys import AuditKeys
from portal.services import Services

log = logging.getLogger("modelfleet.portal.audit")
KEEP = 20


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or not signed by a known audit key."""


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.stem.isdigit())


def read(path: Path, keys: AuditKeys) -> Checkpoint:
    try:
        data = json.loads(path.read_text())
        checkpoint = Checkpoint(
            int(data["last_id"]), str(data["last_hash"]), str(data["at"]), str(data["key_id"])
        )
        signature = str(data["signature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
    if not keys.matches(checkpoint.key_id, checkpoint.message(), signature):
        raise CheckpointError(f"checkpoint {path} is not signed by a known audit key")
    return checkpoint


def all_of(directory: Path, keys: AuditKeys) -> list[Checkpoint]:
    """Every kept checkpoint, oldest first, each checked against its signature."""
    return [read(path, keys) for path in _files(directory)]


def write(directory: Path, keys: AuditKeys, last_id: int, last_hash: str) -> Checkpoint | None:
    """Record the head; nothing when the chain is empty or the newest checkpoint already holds it."""
    if last_id == 0:
        return None
    path = directory / f"{last_id:012d}.json"
    if path.exists():
        return None
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    checkpoint = Checkpoint(last_id, last_hash, stamp, keys.current_id)
    body = {**asdict(checkpoint), "signature": keys.seal(keys.current_id, checkpoint.message())}
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
    partial.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(partial, path)  # whole or absent, never half-written
    for old in _files(directory)[:-KEEP]:
        old.unlink(missing_ok=True)
    return checkpoint


def checkpoint_now(services: Services) -> Checkpoint | None:
    with services.sessions() as session:
        last_id, last_hash = audit.head_of(session)
        keys = audit.session_keys(session)
    return write(services.settings.resolved_audit_checkpoint_dir, keys, last_id, last_hash)


def verify_with(session: Session, keys: AuditKeys, directory: Path) -> audit.ChainReport:
    """The chain against every kept checkpoint (one written after a truncation made while no portal
    ran still leaves the older ones); a checkpoint that fails its signature fails it."""
    try:
        checkpoints = all_of(directory, keys)
    except CheckpointError as exc:
        return audit.ChainReport(0, 0, str(exc))
    return audit.verify(session, checkpoints, keys=keys)


def verify(services: Services, session: Session) -> audit.ChainReport:
    """Verify, and checkpoint the chain when it is intact (what was just verified is sealed)."""
    keys = audit.session_keys(session)
    directory = services.settings.resolved_audit_checkpoint_dir
    report = verify_with(session, keys, directory)
    if report.ok:
        write(directory, keys, *report.verified_head)
    return report


def checkpoint_starter(services: Services) -> Callable[[], None]:
    """Write a checkpoint every `audit_checkpoint_seconds` when the chain grew; returns the stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(services.settings.audit_checkpoint_seconds):
            try:
                checkpoint_now(services)
            except Exception:  # the database blinked: next round
                log.exception("audit checkpoint failed")

    thread = threading.Thread(target=loop, name="modelfleet-audit-checkpoint", daemon=True)
    thread.start()

    def stop_checkpoints() -> None:
        stop.set()
        thread.join()

    return stop_checkpoints
