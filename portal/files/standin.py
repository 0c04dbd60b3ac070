"""A stand-in hub: Hugging Face's and ModelScope's wire formats over files held in this process.

The offline demo serves a tiny model with it, the tests and the benchmark drive the downloader
against it; it is named as a stand-in wherever it is used. What it does as the real hubs do (as
their clients read them): the revision → `sha` answer, the tree in pages of 1000 with a
`Link: rel="next"`, `resolve` redirecting LFS files to a CDN path (carrying `X-Repo-Commit`, `X-Linked-Etag`,
`X-Linked-Size`), `Range` on every content URL, ModelScope's file list and download URL, and
gated repositories answering 401/403 with `X-Error-Code: GatedRepo`.

For tests it can also cut a response off after a budget of bytes (`cut_after`), ignore Range
(`ignore_range`), and it counts the bytes it served.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

PAGE = 1000
MS_TRUNCATION = 3000  # ModelScope's `repo/files` cuts its answer here
LFS_THRESHOLD = 10 * 1024  # larger files are "LFS": sha256 listed, content behind a CDN redirect
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Blob:
    """File content addressed by offset, so large files need not be held in memory."""

    size: int

    def read(self, start: int, end: int) -> bytes:  # [start, end)
        raise NotImplementedError

    @cached_property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for at in range(0, self.size, 1 << 22):
            h.update(self.read(at, min(self.size, at + (1 << 22))))
        return h.hexdigest()

    @cached_property
    def git_oid(self) -> str:
        h = hashlib.sha1(f"blob {self.size}\0".encode())
        h.update(self.read(0, self.size))
        return h.hexdigest()


class Bytes(Blob):
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]


class Pattern(Blob):
    """`size` bytes repeating a seeded random MiB: a 2 GB weight file made on the fly."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.block = random.Random(seed).randbytes(1 << 20)

    def read(self, start: int, end: int) -> bytes:
        n = len(self.block)
        out = bytearray()
        while start < end:
            at = start % n
            take = min(n - at, end - start)
            out += self.block[at : at + take]
            start += take
        return bytes(out)


@dataclass
class Repo:
    files: dict[str, Blob]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    token: str | None = None  # the one token the gate lets through

    def lfs(self, path: str) -> bool:
        return self.files[path].size > LFS_THRESHOLD


@dataclass
class StandInHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    cut_after: int | None = None  # bytes served before every later response is cut off (None: never)
    ignore_range: bool = False
    delay: float = 0.0  # seconds per 256 KiB sent: a slow hub, so a test can act mid-download
    failures: list[int] = field(default_factory=list)  # statuses the next content requests answer (429, 503…)
    retry_after: str = "0"  # the `Retry-After` those answers carry
    served: int = 0
    requests: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/models/{owner}/{name}/revision/{rev}", self._info),
                Route("/api/models/{owner}/{name}/tree/{rev}", self._tree),
                Route("/api/v1/models/{owner}/{name}/repo/files", self._ms_files),
                Route("/api/v1/models/{owner}/{name}/repo", self._ms_file),
                Route("/cdn/{owner}/{name}/{rev}/{path:path}", self._cdn, methods=["GET", "HEAD"]),
                Route("/{owner}/{name}/resolve/{rev}/{path:path}", self._resolve, methods=["GET", "HEAD"]),
            ]
        )

    # -- Hugging Face ------------------------------------------------------------------------------
    def _repo(self, request: Request) -> tuple[str, Repo | None]:
        rid = f"{request.path_params['owner']}/{request.path_params['name']}"
        return rid, self.repos.get(rid)

    async def _info(self, request: Request) -> Response:
        rid, repo = self._repo(request)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if request.path_params["rev"] not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {request.path_params['rev']}")
        siblings = [{"rfilename": p} for p in sorted(repo.files)]
        return JSONResponse(
            {
                "id": rid,
                "sha": repo.sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "siblings": siblings,
            }
        )

    async def _tree(self, request: Request) -> Response:
        _, repo = self._repo(request)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if request.path_params["rev"] != repo.sha:
            return _error(404, "RevisionNotFound", "Invalid rev id")
        paths = sorted(repo.files)
        start = int(request.query_params.get("cursor", "0"))
        page = [self._entry(repo, p) for p in paths[start : start + PAGE]]
        headers = {}
        if start + PAGE < len(paths):
            nxt = request.url.include_query_params(cursor=str(start + PAGE))
            headers["link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(page, headers=headers)

    def _entry(self, repo: Repo, path: str) -> dict[str, object]:
        blob = repo.files[path]
        entry: dict[str, object] = {"type": "file", "path": path, "size": blob.size}
        if repo.lfs(path):
            entry["oid"] = hashlib.sha1(path.encode()).hexdigest()
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
        else:
            entry["oid"] = blob.git_oid
        return entry

    def _gate(self, request: Request, rid: str, repo: Repo) -> Response | None:
        if not repo.gated:
            return None
        auth = request.headers.get("authorization", "")
        if not auth:
            return _error(
                401,
                "GatedRepo",
                f"Access to model {rid} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
        if repo.token is None or auth != f"Bearer {repo.token}":
            return _error(
                403,
                "GatedRepo",
                f"Access to model {rid} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{rid} to ask for access.",
            )
        return None

    async def _resolve(self, request: Request) -> Response:
        rid, repo = self._repo(request)
        path = request.path_params["path"]
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if (refused := self._gate(request, rid, repo)) is not None:
            return refused
        if request.path_params["rev"] not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", "Invalid rev id")
        if path not in repo.files:
            return _error(404, "EntryNotFound", f"{path} does not exist")
        blob = repo.files[path]
        if repo.lfs(path):
            headers = {
                "x-repo-commit": repo.sha,
                "x-linked-etag": f'"{blob.sha256}"',
                "x-linked-size": str(blob.size),
            }
            return RedirectResponse(f"/cdn/{rid}/{repo.sha}/{path}", status_code=302, headers=headers)
        return self._content(request, blob, {"x-repo-commit": repo.sha, "etag": f'"{blob.git_oid}"'})

    async def _cdn(self, request: Request) -> Response:
        _, repo = self._repo(request)
        if repo is None or request.path_params["path"] not in repo.files:
            return Response(status_code=404)
        return self._content(request, repo.files[request.path_params["path"]], {})

    # -- ModelScope --------------------------------------------------------------------------------
    async def _ms_files(self, request: Request) -> Response:
        _, repo = self._repo(request)
        if repo is None:
            return JSONResponse(
                {"Code": 10010205001, "Success": False, "Message": "model not found"}, status_code=404
            )
        root = request.query_params.get("Root", "").strip("/")
        recursive = request.query_params.get("Recursive", "False").lower() == "true"
        under = sorted(p for p in repo.files if not root or p.startswith(root + "/"))
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for p in under:
            rest = p[len(root) + 1 :] if root else p
            if not recursive and "/" in rest:  # one level: the folder, once
                folder = (root + "/" if root else "") + rest.split("/", 1)[0]
                if folder not in folders:
                    folders.add(folder)
                    entries.append(
                        {"Name": folder.rsplit("/", 1)[-1], "Path": folder, "Type": "tree", "Size": 0}
                    )
                continue
            b = repo.files[p]
            entries.append(
                {
                    "Name": p.rsplit("/", 1)[-1],
                    "Path": p,
                    "Type": "blob",
                    "Size": b.size,
                    "Sha256": b.sha256,
                    "Revision": repo.sha,
                    "IsLFS": repo.lfs(p),
                }
            )
        # As ModelScope does: cut at 3000 entries, silently (no total, no truncation flag).
        body = {
            "Code": 200,
            "Success": True,
            "Message": "success",
            "Data": {"Files": entries[:MS_TRUNCATION]},
        }
        return JSONResponse(body)

    async def _ms_file(self, request: Request) -> Response:
        rid, repo = self._repo(request)
        path = request.query_params.get("FilePath", "")
        if repo is None or path not in repo.files:
            return JSONResponse({"Code": 404, "Success": False, "Message": "file not found"}, status_code=404)
        if (refused := self._gate(request, rid, repo)) is not None:
            return refused
        return self._content(request, repo.files[path], {})

    # -- content -----------------------------------------------------------------------------------
    def _content(self, request: Request, blob: Blob, headers: dict[str, str]) -> Response:
        with self._lock:
            self.requests.append(f"{request.method} {request.url.path}")
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return Response(status_code=failure, headers={"retry-after": self.retry_after})
        start, end, status = 0, blob.size, 200
        wanted = _RANGE.match(request.headers.get("range", ""))
        if wanted and not self.ignore_range:
            start = int(wanted.group(1))
            end = min(blob.size, int(wanted.group(2)) + 1) if wanted.group(2) else blob.size
            if start >= blob.size and blob.size:
                return Response(status_code=416, headers={"content-range": f"bytes */{blob.size}"})
            status = 206
            headers = {**headers, "content-range": f"bytes {start}-{end - 1}/{blob.size}"}
        headers = {**headers, "content-length": str(end - start), "accept-ranges": "bytes"}
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(
            self._body(blob, start, end),
            status_code=status,
            headers=headers,
            media_type="application/octet-stream",
        )

    async def _body(self, blob: Blob, start: int, end: int) -> AsyncIterator[bytes]:
        step = 256 * 1024
        for at in range(start, end, step):
            chunk = blob.read(at, min(end, at + step))
            with self._lock:
                budget = None if self.cut_after is None else self.cut_after - self.served
                if budget is not None and budget < len(chunk):
                    chunk = chunk[: max(0, budget)]
                self.served += len(chunk)
            if chunk:
                yield chunk
            if self.delay:
                await asyncio.sleep(self.delay)
            if budget is not None and budget <= len(chunk):
                raise ConnectionAbortedError("the stand-in hub cuts this response off (cut_after)")


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": message}, status_code=status, headers={"x-error-code": code, "x-error-message": message}
    )


@contextmanager
def serve(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="standin-hub", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the stand-in hub did not start")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


__all__ = ["Blob", "Bytes", "Pattern", "Repo", "StandInHub", "serve"]


def main(argv: list[str] | None = None) -> None:
    """`python -m portal.files.standin --port N [--size BYTES]`: serve `acme/bench`, one generated
    weights file of BYTES (and a config), until killed; the benchmark runs it in its own process."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m portal.files.standin")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=1 << 30)
    args = p.parse_args(argv)
    hub = StandInHub(
        {"acme/bench": Repo({"config.json": Bytes(b"{}"), "model.safetensors": Pattern(args.size)})}
    )
    uvicorn.run(hub.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
