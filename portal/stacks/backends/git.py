"""The `git` backend: one commit per job in the local stacks repository.

The commit carries the trailers `Modelfleet-Job: <id>` and `Modelfleet-Requests: <ids>`. A job that
runs again after a crash first looks for its own trailer in recent history: found means the commit
happened before the crash, so the job is marked done without committing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.errors import IssuesError
from fleet.loader import MODEL_FILES_DIR, load_fleet
from fleet.pipeline import render_fleet
from portal.repository import StackRepository
from portal.stacks.backends import BackendError, JobContext, Outcome
from portal.stacks.changes import ChangePlan, Refused, plan_change

JOB_TRAILER = "Modelfleet-Job"
REQUESTS_TRAILER = "Modelfleet-Requests"
HISTORY_DEPTH = 500  # commits searched for a crashed job's trailer; many jobs on other stacks may follow


@dataclass(frozen=True, slots=True)
class PastCommit:
    sha: str
    requests: list[int]


def committed_by(repository: StackRepository, job_id: int) -> PastCommit | None:
    """The commit a job already made, if any (searching the last HISTORY_DEPTH commits)."""
    fmt = (
        f"%H%x1f%(trailers:key={JOB_TRAILER},valueonly,separator=%x2c)"
        f"%x1f%(trailers:key={REQUESTS_TRAILER},valueonly,separator=%x2c)%x1e"
    )
    log = repository.git("log", f"-n{HISTORY_DEPTH}", f"--format={fmt}")
    for record in log.split("\x1e"):
        parts = record.strip().split("\x1f")
        if len(parts) == 3 and parts[1].strip() == str(job_id):
            ids = [int(x) for x in parts[2].replace(",", " ").split() if x.strip().isdigit()]
            return PastCommit(parts[0], ids)
    return None


def _discard_uncommitted(repository: StackRepository, stack: str) -> None:
    """Put the stack's servings and model-files folders back as HEAD has them: files a crashed job
    wrote but did not commit must not slip into the next commit, nor into the plan."""
    for name in ("servings", MODEL_FILES_DIR):
        folder = repository.relative(repository.stacks_dir / stack / name)
        if not repository.git("status", "--porcelain", "--", folder):
            continue
        repository.git("reset", "-q", "--", folder, check=False)
        if repository.git("ls-tree", "HEAD", "--", folder):
            repository.git("checkout", "-q", "HEAD", "--", folder)
        repository.git("clean", "-fdq", "--", folder)


def message_parts(job: JobContext, plan: ChangePlan) -> list[str]:
    """Subject, the requests, and the trailers crash recovery looks for."""
    applied = set(plan.applied)
    done = [r for r in job.requests if r.id in applied]
    lines = [r.describe() for r in done]
    files = sum(r.files_name is not None for r in done)
    kinds = [f"{len(done) - files} serving change(s)"] if len(done) > files else []
    kinds += [f"{files} model-files change(s)"] if files else []
    subject = f"portal: {' and '.join(kinds)} on stack {job.stack}"
    trailers = f"{JOB_TRAILER}: {job.job_id}\n{REQUESTS_TRAILER}: {', '.join(str(i) for i in plan.applied)}"
    return [subject, "\n".join(f"- {line}" for line in lines), trailers]


def _write(repository: StackRepository, files: dict[str, str | None]) -> None:
    for path, content in files.items():
        full = repository.root / path
        if content is None:
            full.unlink(missing_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(content, "utf-8")


def commit_change(job: JobContext) -> Outcome:
    """Plan, write and commit the job's requests (shared with the Pulumi backend)."""
    repository = job.services.repository
    notes: list[tuple[str, str, dict[str, Any]]] = []
    with repository.lock:  # no database writes in here: API requests may hold the database and wait on us
        past = committed_by(repository, job.job_id)
        if past is not None:
            outcome = _recovered(job, past)
            notes.append(
                ("log", f"job {job.job_id} already committed {past.sha[:12]}; not committing again", {})
            )
        else:
            outcome = _commit(job, repository, notes)
    for kind, message, data in notes:
        job.emit(kind, message, data)
    return outcome


def _recovered(job: JobContext, past: PastCommit) -> Outcome:
    done = set(past.requests)
    outcome = Outcome(result={"commit": past.sha, "recovered": True})
    for r in job.requests:
        if r.id in done:
            outcome.statuses[r.id] = "applied"
        else:
            outcome.refused[r.id] = Refused(
                [
                    (
                        "",
                        f"not in commit {past.sha[:12]}: it did not build with the stack; submit it again",
                    )
                ]
            )
    return outcome


def _commit(
    job: JobContext, repository: StackRepository, notes: list[tuple[str, str, dict[str, Any]]]
) -> Outcome:
    _discard_uncommitted(repository, job.stack)
    try:
        plan = plan_change(repository, job.stack, job.requests)
    except IssuesError as exc:  # the stack file itself cannot be read
        raise BackendError(f"stack {job.stack!r} cannot be read: {exc}") from exc
    outcome = Outcome(refused=dict(plan.refused), result={"base": plan.base_commit, "commit": None})
    if not plan.applied:
        return outcome
    files = plan.files(repository)
    _write(repository, files)
    try:  # the last word: the files on disk, read back the way `pulumi up` reads them
        render_fleet(load_fleet(repository.stacks_dir, job.stack))
    except IssuesError as exc:
        _discard_uncommitted(repository, job.stack)
        raise BackendError(f"the change would break stack {job.stack!r}; nothing committed: {exc}") from exc
    if files:
        repository.git("add", "-A", "--", *files)
    if not files or not repository.git("diff", "--cached", "--name-only"):
        notes.append(("log", "nothing to commit: the stack already says this", {}))
    else:
        message = message_parts(job, plan)
        repository.git("commit", "-q", *(arg for part in message for arg in ("-m", part)))
        outcome.result["commit"] = repository.head()
        outcome.result["files"] = sorted(files)
        notes.append(("log", f"committed {outcome.result['commit'][:12]} ({len(files)} file(s))", {}))
    outcome.statuses = {i: "applied" for i in plan.applied}
    return outcome


class GitBackend:
    name = "git"

    def apply(self, job: JobContext) -> Outcome:
        return commit_change(job)
