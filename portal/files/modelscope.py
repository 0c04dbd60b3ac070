"""ModelScope (or its international site / a mirror: `MODELSCOPE_ENDPOINT`) over the legacy API its SDK
uses (`/api/v1`): a file list with each file's `Sha256`, and a download URL that honours `Range`.

The list is cut silently at 3000 entries, so a list that long is taken again folder by folder
(`Root=`). The legacy API names no repository commit: the files are pinned by their digests, and the
revision is kept as asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx

from portal.files.errors import SourceRefused, SourceUnavailable
from portal.files.http import get_json
from portal.files.listing import Listing, RemoteFile, SourceKind

DEFAULT_ENDPOINT = "https://www.modelscope.cn"
TRUNCATION = 3000
MAX_DEPTH = 32


@dataclass(frozen=True)
class ModelScope:
    repository: str
    revision: str = "master"
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> SourceKind:
        return "modelscope"

    def _headers(self) -> dict[str, str]:
        # The legacy API reads the session cookie, newer endpoints the bearer token: the SDK sends both.
        if not self.token:
            return {}
        return {"authorization": f"Bearer {self.token}", "cookie": f"m_session_id={self.token}"}

    def _files(self, http: httpx.Client, root: str, recursive: bool) -> list[dict[str, Any]]:
        url = (
            f"{self.endpoint.rstrip('/')}/api/v1/models/{self.repository}/repo/files"
            f"?Revision={quote_plus(self.revision)}&Recursive={'True' if recursive else 'False'}"
            + (f"&Root={quote_plus(root)}" if root else "")
        )
        body, _ = get_json(http, url, self._headers(), f"{self.repository}@{self.revision} (file list)")
        if not isinstance(body, dict):
            raise SourceUnavailable(f"{self.repository}: the file list is not an object")
        if body.get("Success") is False or body.get("Code") not in (None, 200):
            raise SourceRefused(f"{self.repository}@{self.revision}: {body.get('Message') or 'refused'}")
        data = body.get("Data") or {}
        files = data.get("Files") if isinstance(data, dict) else None
        return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []

    def _walk(self, http: httpx.Client, root: str, depth: int) -> list[RemoteFile]:
        entries = self._files(http, root, recursive=True)
        if len(entries) < TRUNCATION or depth >= MAX_DEPTH:
            return [f for f in map(_entry, entries) if f is not None]
        out: list[RemoteFile] = []
        for e in self._files(http, root, recursive=False):
            if e.get("Type") == "tree" and isinstance(e.get("Path"), str):
                out += self._walk(http, str(e["Path"]), depth + 1)
            elif (f := _entry(e)) is not None:
                out.append(f)
        return out

    def listing(self, http: httpx.Client) -> Listing:
        files = {f.path: f for f in self._walk(http, "", 0)}
        ordered = tuple(files[p] for p in sorted(files))
        return Listing("modelscope", self.repository, self.revision, self.revision, ordered)

    def locate(self, listing: Listing, file: RemoteFile) -> tuple[str, dict[str, str]]:
        url = (
            f"{self.endpoint.rstrip('/')}/api/v1/models/{self.repository}/repo"
            f"?Revision={quote_plus(listing.commit)}&FilePath={quote_plus(file.path)}"
        )
        return url, self._headers()


def _entry(entry: dict[str, Any]) -> RemoteFile | None:
    path, size = entry.get("Path"), entry.get("Size")
    if entry.get("Type") != "blob" or not isinstance(path, str) or not isinstance(size, int):
        return None
    sha = entry.get("Sha256")
    return RemoteFile(path, size, sha if isinstance(sha, str) and sha else None)


__all__ = ["DEFAULT_ENDPOINT", "ModelScope"]
