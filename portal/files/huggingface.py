"""Hugging Face Hub (or a mirror of it: `HF_ENDPOINT`) over its HTTP API, as `huggingface_hub` uses it.

- revision → commit: `GET /api/models/{repo}/revision/{rev}` → `sha` (skipped when `rev` is a commit);
- files: `GET /api/models/{repo}/tree/{commit}?recursive=true&expand=false`, 1000 entries a page, the
  next page in the `Link: <…>; rel="next"` header; an LFS file's sha256 is `lfs.oid`;
- content: `GET /{repo}/resolve/{commit}/{path}`, which redirects LFS files to a CDN (followed; the
  token does not leave the hub's host) and honours `Range`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from portal.files.errors import SourceUnavailable
from portal.files.http import get_json
from portal.files.listing import Listing, RemoteFile, SourceKind

DEFAULT_ENDPOINT = "https://huggingface.co"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPOSITORY = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*$")
MAX_PAGES = 1000  # a million files: a hub that keeps sending `next` past that is looping


@dataclass(frozen=True)
class HuggingFace:
    repository: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> SourceKind:
        return "hf"

    def _base(self) -> str:
        return self.endpoint.rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def commit(self, http: httpx.Client) -> str:
        if COMMIT.match(self.revision):
            return self.revision
        url = f"{self._base()}/api/models/{self.repository}/revision/{quote(self.revision, safe='')}"
        info, _ = get_json(http, url, self._headers(), f"{self.repository}@{self.revision}")
        sha = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(sha, str) or not COMMIT.match(sha):
            raise SourceUnavailable(f"{self.repository}@{self.revision}: the hub's answer has no commit sha")
        return sha

    def listing(self, http: httpx.Client) -> Listing:
        commit = self.commit(http)
        url: str | None = (
            f"{self._base()}/api/models/{self.repository}/tree/{commit}?recursive=true&expand=false"
        )
        files: list[RemoteFile] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page, response = get_json(http, url, self._headers(), f"{self.repository}@{commit} (file list)")
            if not isinstance(page, list):
                raise SourceUnavailable(f"{self.repository}@{commit}: the file list is not a list")
            files += [f for f in (_entry(e) for e in page) if f is not None]
            nxt = response.links.get("next", {}).get("url")
            url = str(httpx.URL(url).join(nxt)) if nxt else None
        else:
            raise SourceUnavailable(
                f"{self.repository}@{commit}: the file list has more than {MAX_PAGES} pages"
            )
        return Listing(
            "hf", self.repository, self.revision, commit, tuple(sorted(files, key=lambda f: f.path))
        )

    def locate(self, listing: Listing, file: RemoteFile) -> tuple[str, dict[str, str]]:
        return (
            f"{self._base()}/{self.repository}/resolve/{listing.commit}/{quote(file.path)}",
            self._headers(),
        )


def _entry(entry: Any) -> RemoteFile | None:
    if not isinstance(entry, dict) or entry.get("type") != "file":
        return None
    path, size = entry.get("path"), entry.get("size")
    if not isinstance(path, str) or not isinstance(size, int):
        return None
    lfs = entry.get("lfs")
    sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
    oid = entry.get("oid")
    return RemoteFile(
        path,
        int(lfs.get("size", size)) if isinstance(lfs, dict) else size,
        sha256 if isinstance(sha256, str) else None,
        None if isinstance(sha256, str) or not isinstance(oid, str) else oid,
    )


__all__ = ["DEFAULT_ENDPOINT", "REPOSITORY", "HuggingFace"]
