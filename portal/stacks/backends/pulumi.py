"""The `pulumi` backend: commit like `git`, then preview and `up` the stack through the Automation API.

The Automation API drives the Pulumi CLI, which must be on PATH (`pulumi.automation` is imported
only here, only when a job runs). The program is the project in `pulumi_work_dir` (default: the
stacks repository, which then holds `Pulumi.yaml`); it reads the serving files just committed.

Another update holding the stack's lock (CI, an operator, a second portal) is waited for with
backoff; the portal never cancels an update or breaks a lock, since only a person can tell a dead
holder from a slow one (`pulumi cancel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from portal.stacks.backends import BackendError, JobContext, Outcome
from portal.stacks.backends.git import commit_change

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent

T = TypeVar("T")
RETRY_DELAYS = (5.0, 10.0, 20.0, 40.0, 80.0)  # seconds between tries while another update holds the lock
TAIL = 2_000  # characters of the CLI's stderr kept in an error


class PulumiBackend:
    name = "pulumi"

    def __init__(
        self, delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._delays, self._sleep = tuple(delays), sleep

    def apply(self, job: JobContext) -> Outcome:
        outcome = commit_change(job)
        if not outcome.statuses:
            return outcome
        try:
            import pulumi.automation as auto
        except ImportError as exc:
            raise BackendError(
                _partial("the pulumi backend needs the pulumi package", outcome), outcome.result
            ) from exc
        settings = job.services.settings
        work_dir = str(settings.pulumi_work_dir or job.services.repository.root)
        env = {"PULUMI_SKIP_UPDATE_CHECK": "true"}
        if settings.pulumi_backend_url:
            env["PULUMI_BACKEND_URL"] = settings.pulumi_backend_url
        opts = auto.LocalWorkspaceOptions(work_dir=work_dir, env_vars=env)
        message = f"modelfleet job {job.job_id}: {len(outcome.statuses)} request(s)"
        step = "select"
        try:
            stack = self._retry(
                job, lambda: auto.select_stack(stack_name=job.stack, work_dir=work_dir, opts=opts)
            )
            step = "preview"
            preview = self._retry(
                job, lambda: stack.preview(on_event=_forward(job, "preview"), color="never", message=message)
            )
            outcome.result["preview"] = dict(preview.change_summary)
            job.note("preview", "preview done", changes=outcome.result["preview"])
            step = "up"
            up = self._retry(
                job, lambda: stack.up(on_event=_forward(job, "up"), color="never", message=message)
            )
        except FileNotFoundError as exc:
            raise _failed(outcome, "the pulumi backend needs the Pulumi CLI on PATH", exc) from exc
        except auto.CommandError as exc:
            raise _failed(outcome, f"pulumi {step} failed", exc) from exc
        outcome.result["up"] = {
            "result": up.summary.result,
            "version": up.summary.version,
            "resource_changes": dict(up.summary.resource_changes or {}),
        }
        job.note("up", f"update {up.summary.result}", **outcome.result["up"])
        return outcome

    def _retry(self, job: JobContext, call: Callable[[], T]) -> T:
        import pulumi.automation as auto

        for delay in (*self._delays, None):
            try:
                return call()
            except auto.ConcurrentUpdateError:
                if delay is None:
                    raise BackendError(
                        f"stack {job.stack!r} stayed locked by another update through "
                        f"{len(self._delays) + 1} tries; the portal never cancels updates or breaks locks: "
                        "if the holder is gone, an operator runs `pulumi cancel`"
                    ) from None
                job.note("log", f"another update holds stack {job.stack!r}; trying again in {delay:g}s")
                self._sleep(delay)
        raise AssertionError("unreachable")


def _partial(message: str, outcome: Outcome) -> str:
    commit = outcome.result.get("commit")
    return f"{message} (the change is committed as {commit[:12]}; it was not applied)" if commit else message


def _failed(outcome: Outcome, message: str, exc: BaseException) -> BackendError:
    detail = str(getattr(exc, "stderr", "") or exc).strip()[-TAIL:]
    return BackendError(f"{_partial(message, outcome)}: {detail}", outcome.result)


def _forward(job: JobContext, phase: str) -> Callable[[EngineEvent], None]:
    """Engine events, reduced to what a person follows: steps, diagnostics, failures, the summary."""

    def on_event(event: EngineEvent) -> None:
        data: dict[str, Any] = {"phase": phase, "sequence": event.sequence}
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            job.emit("step", f"{phase}: {meta.op} {meta.urn}", {**data, "op": str(meta.op), "urn": meta.urn})
        elif event.res_op_failed_event is not None:
            meta = event.res_op_failed_event.metadata
            job.emit("log", f"{phase}: {meta.op} {meta.urn} failed", {**data, "urn": meta.urn})
        elif event.diagnostic_event is not None:
            diag = event.diagnostic_event
            if diag.severity != "debug":
                job.emit(
                    "log", f"{phase}: {diag.severity}: {diag.message.strip()}", {**data, "urn": diag.urn}
                )
        elif event.summary_event is not None:
            changes = {str(k): v for k, v in (event.summary_event.resource_changes or {}).items()}
            job.emit("summary", f"{phase}: {changes}", {**data, "changes": changes})

    return on_event
