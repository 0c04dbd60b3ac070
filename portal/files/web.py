"""One file at a plain https URL: its size from a HEAD, its name from the path, a sha256 when the
request gives one (the URL publishes none)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from portal.files.errors import SourceUnavailable
from portal.files.http import refusal
from portal.files.listing import Listing, RemoteFile, SourceKind


@dataclass(frozen=True)
class WebFile:
    url: str
    sha256: str | None = None

    @property
    def kind(self) -> SourceKind:
        return "https"

    @property
    def repository(self) -> str:
        return self.url

    def listing(self, http: httpx.Client) -> Listing:
        try:
            response = http.head(self.url)
        except httpx.TransportError as exc:
            raise SourceUnavailable(f"{self.url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise refusal(response, self.url)
        try:
            size = int(response.headers["content-length"])
        except (KeyError, ValueError) as exc:
            raise SourceUnavailable(f"{self.url}: the server does not say the file's size") from exc
        name = unquote(urlsplit(self.url).path.rsplit("/", 1)[-1]) or "download"
        etag = response.headers.get("etag", "").strip('"').removeprefix("W/").strip('"')
        return Listing("https", self.url, "", etag, (RemoteFile(name, size, self.sha256),))

    def locate(self, listing: Listing, file: RemoteFile) -> tuple[str, dict[str, str]]:
        return self.url, {}


__all__ = ["WebFile"]
