"""A source of model files: it lists what one pinned revision holds and says where to GET each file."""

from __future__ import annotations

from typing import Protocol

import httpx

from portal.files.listing import Listing, RemoteFile, SourceKind


class Source(Protocol):
    """Hugging Face, ModelScope or a plain https URL; implementations are frozen values."""

    @property
    def kind(self) -> SourceKind: ...

    @property
    def repository(self) -> str: ...

    def listing(self, http: httpx.Client) -> Listing:
        """Resolve the revision to a commit once and list the files at that commit."""
        ...

    def locate(self, listing: Listing, file: RemoteFile) -> tuple[str, dict[str, str]]:
        """The URL and headers of a GET of `file` (ranged reads are added by the caller)."""
        ...
