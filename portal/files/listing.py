"""What a source holds at one pinned revision: its files, their sizes and their digests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

SourceKind = Literal["hf", "modelscope", "s3", "https"]
SOURCES: tuple[SourceKind, ...] = ("hf", "modelscope", "s3", "https")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a listing. `sha256` is the content digest the hub publishes (Hugging Face's LFS
    `lfs.oid`, ModelScope's `Sha256`); `git_oid` the git blob id of a small Hugging Face file."""

    path: str
    size: int
    sha256: str | None = None
    git_oid: str | None = None

    @property
    def digest(self) -> str:
        """How the copy is verified, as recorded on the stored object."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.git_oid:
            return f"git-blob:{self.git_oid}"
        return f"size:{self.size}"


@dataclass(frozen=True)
class Listing:
    """A source's files at `commit` (the revision resolved once, so every file comes from it)."""

    source: SourceKind
    repository: str
    revision: str  # as asked
    commit: str  # as resolved; equal to `revision` where the source has no commits (https, s3)
    files: tuple[RemoteFile, ...] = field(default_factory=tuple)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def select(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Listing:
        """The files matching any of `include` (all when empty) and none of `exclude`."""
        chosen = tuple(f for f in self.files if selected(f.path, include, exclude))
        return Listing(self.source, self.repository, self.revision, self.commit, chosen)


def selected(path: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Glob patterns as `huggingface_hub`'s allow/ignore patterns: `*` crosses `/`; a pattern ending
    in `/` means everything under that folder."""
    inc = [_glob(p) for p in include]
    if inc and not any(fnmatchcase(path, p) for p in inc):
        return False
    return not any(fnmatchcase(path, _glob(p)) for p in exclude)


def _glob(pattern: str) -> str:
    return pattern + "*" if pattern.endswith("/") else pattern


def check_pattern(pattern: str) -> str | None:
    """Why a pattern cannot be used (None when it can)."""
    if not pattern.strip():
        return "is empty"
    if pattern.startswith("/") or ".." in pattern.split("/"):
        return "must be relative to the repository, without '..'"
    if len(pattern) > 200:
        return "is longer than 200 characters"
    return None


__all__ = ["SOURCES", "Listing", "RemoteFile", "SourceKind", "check_pattern", "selected"]
