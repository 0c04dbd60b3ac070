"""The `pull-request` backend: one branch and pull request per job on a GitHub-compatible REST API.

The change is planned offline against the local repository (the copy the portal reads), then sent as
one commit built from git objects: the base branch's head, its tree, a new tree with one entry per
changed serving file (`"sha": null` deletes), a commit, the branch `modelfleet/job-<id>`, and the
pull request, whose body lists the requests and the rendered manifest diff. Requests stay
`proposed` until the pull request is merged (`applied`) or closed unmerged (`rejected`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from portal.settings import Settings
from portal.stacks.backends import BackendError, JobContext, Outcome
from portal.stacks.backends.git import message_parts
from portal.stacks.changes import ChangePlan, manifest_diff, plan_change, rendering_at_head

API_VERSION = "2022-11-28"
HINTS = {
    401: "the token was refused; check MODELFLEET_GITHUB_TOKEN",
    403: "the token may not do this, or the rate limit is spent; it needs contents and pull requests "
    "(read and write)",
    404: "not found, or the token cannot see it; check MODELFLEET_GITHUB_REPOSITORY and "
    "MODELFLEET_GITHUB_BASE_BRANCH",
    409: "conflict: the repository is empty or the branch moved meanwhile",
    422: "GitHub refused the request",
}


def branch_for(job_id: int) -> str:
    return f"modelfleet/job-{job_id}"


class GitHub:
    """The few REST calls the portal makes, with errors turned into sentences."""

    def __init__(self, settings: Settings) -> None:
        repository = settings.github_repository or ""
        if repository.count("/") != 1:
            raise BackendError("the pull-request backend needs MODELFLEET_GITHUB_REPOSITORY=owner/name")
        if settings.github_token is None:
            raise BackendError("the pull-request backend needs MODELFLEET_GITHUB_TOKEN")
        self.repository = repository
        self.owner = repository.split("/")[0]
        self.base = settings.github_base_branch
        self.api_url = settings.github_api_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={
                "Authorization": f"Bearer {settings.github_token.get_secret_value()}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "modelfleet-portal",
            },
            timeout=30,
        )

    def __enter__(self) -> GitHub:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: str) -> Any:
        url = f"/repos/{self.repository}{path}"
        try:
            response = self._http.request(method, url, json=body, params=params or None)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the GitHub API at {self.api_url}: {exc}") from exc
        if response.status_code >= 400:
            raise BackendError(self._explain(method, url, response))
        return response.json() if response.content else None

    def _explain(self, method: str, url: str, response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            data = {}
        said = str(data.get("message", "")) if isinstance(data, dict) else ""
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list):
            said += "".join(
                f"; {e.get('message') or e.get('code')}" if isinstance(e, dict) else f"; {e}" for e in errors
            )
        hint = HINTS.get(response.status_code, "unexpected answer")
        return f"GitHub {method} {url} answered {response.status_code}: {hint}" + (
            f" ({said})" if said else ""
        )

    def pull_request_state(self, number: int) -> str:
        """open, merged, or closed (without merging)."""
        data = self.call("GET", f"/pulls/{number}")
        if data.get("merged") or data.get("merged_at"):
            return "merged"
        return "closed" if data.get("state") == "closed" else "open"


def _title(job: JobContext, plan: ChangePlan) -> str:
    applied = [r for r in job.requests if r.id in set(plan.applied)]
    if len(applied) == 1:
        one = applied[0]
        if one.files_name is not None:
            verb = "remove model files" if one.desired is None else "model files"
            return f"Modelfleet: {verb} {one.files_name} on {job.stack}"
        return f"Modelfleet: {one.action} {one.serving} on {job.stack}"
    return f"Modelfleet: {len(applied)} serving changes on {job.stack}"


def _body(job: JobContext, plan: ChangePlan, diff: str) -> str:
    applied = set(plan.applied)
    lines = [
        f"Requested through the Modelfleet portal: job {job.job_id}, stack `{job.stack}`, "
        f"planned against `{plan.base_commit[:12]}`.",
        "",
        "### Requests",
        *(f"- {r.describe()}" for r in job.requests if r.id in applied),
    ]
    refused = [r for r in job.requests if r.id in plan.refused]
    if refused:
        lines += ["", "### Refused (not in this pull request)"]
        lines += [f"- {r.describe()}: {plan.refused[r.id]}" for r in refused]
    lines += [
        "",
        "### Rendered manifests",
        "",
        "<details><summary>diff of the Kubernetes objects this change renders</summary>",
        "",
        "```diff",
        diff or "(no rendered object changes)",
        "```",
        "</details>",
    ]
    return "\n".join(lines)


def _tree(files: dict[str, str | None]) -> list[dict[str, Any]]:
    return [
        {"path": path, "mode": "100644", "type": "blob", "content": content}
        if content is not None
        else {"path": path, "mode": "100644", "type": "blob", "sha": None}
        for path, content in sorted(files.items())
    ]


class PullRequestBackend:
    name = "pull-request"

    def apply(self, job: JobContext) -> Outcome:
        services = job.services
        repository = services.repository
        with repository.lock:
            plan = plan_change(repository, job.stack, job.requests)
            files = plan.files(repository)
            diff = manifest_diff(rendering_at_head(repository, job.stack), plan.rendering) if files else ""
        outcome = Outcome(refused=dict(plan.refused), result={"base": plan.base_commit})
        if not plan.applied:
            return outcome
        if not files:
            job.note("log", "nothing to propose: the stack already says this")
            outcome.statuses = {i: "applied" for i in plan.applied}
            return outcome
        branch = branch_for(job.job_id)
        with GitHub(services.settings) as gh:
            existing = self._existing(gh, branch) if job.attempt > 1 else None
            if existing is not None:
                job.note(
                    "log", f"pull request #{existing['number']} was opened before the restart; reusing it"
                )
                pr = existing
            else:
                pr = self._open(gh, job, plan, files, diff, branch)
        outcome.result["pull_request"] = {
            "number": pr["number"],
            "url": pr.get("html_url", ""),
            "branch": branch,
            "state": "open",
        }
        outcome.result["files"] = sorted(files)
        outcome.statuses = {i: "proposed" for i in plan.applied}
        job.note(
            "pull_request",
            f"opened pull request #{pr['number']}",
            number=pr["number"],
            url=pr.get("html_url"),
        )
        return outcome

    @staticmethod
    def _existing(gh: GitHub, branch: str) -> dict[str, Any] | None:
        found = gh.call("GET", "/pulls", head=f"{gh.owner}:{branch}", state="all")
        return found[0] if isinstance(found, list) and found else None

    def _open(
        self,
        gh: GitHub,
        job: JobContext,
        plan: ChangePlan,
        files: dict[str, str | None],
        diff: str,
        branch: str,
    ) -> dict[str, Any]:
        base_sha = gh.call("GET", f"/git/ref/heads/{gh.base}")["object"]["sha"]
        base_tree = gh.call("GET", f"/git/commits/{base_sha}")["tree"]["sha"]
        tree = gh.call("POST", "/git/trees", {"base_tree": base_tree, "tree": _tree(files)})["sha"]
        commit = gh.call(
            "POST",
            "/git/commits",
            {"message": "\n\n".join(message_parts(job, plan)), "tree": tree, "parents": [base_sha]},
        )["sha"]
        job.note("log", f"commit {commit[:12]} on top of {gh.base} ({base_sha[:12]})", commit=commit)
        try:
            gh.call("POST", "/git/refs", {"ref": f"refs/heads/{branch}", "sha": commit})
        except BackendError:
            if job.attempt == 1:
                raise
            # The branch survived a crash before its pull request was opened: point it at the new commit.
            gh.call("PATCH", f"/git/refs/heads/{branch}", {"sha": commit, "force": True})
        pr: dict[str, Any] = gh.call(
            "POST",
            "/pulls",
            {
                "title": _title(job, plan),
                "head": branch,
                "base": gh.base,
                "body": _body(job, plan, diff),
                "draft": False,
                "maintainer_can_modify": True,
            },
        )
        return pr
