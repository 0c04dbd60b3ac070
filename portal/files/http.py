"""HTTP reads from a hub: one client, ranged reads, the hub's refusals as errors, back-off.

Plain `httpx` rather than `huggingface_hub`/`modelscope`: their downloaders write to a local cache
(a full local copy, which the store copy must avoid), delete partial files on failure (no resume
across processes) and check sizes only; what we need from them is a few HTTP calls (the listing,
revision and content URLs named in `huggingface.py` and `modelscope.py`), ranged GETs and their error
headers, which this module does.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import httpx

from portal.files.errors import Cancelled, FilesError, SourceRefused, SourceUnavailable

T = TypeVar("T")
CHUNK = 1 << 20  # what one socket read hands over; parts are assembled from these
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0  # a longer ask fails the attempt sooner; the copy resumes on retry


class RangeIgnored(FilesError):
    """The server answered a ranged GET with the whole file (200): read it in one stream instead."""


def client(timeout: float = 30.0) -> httpx.Client:
    """The client every source uses. Redirects are followed: httpx drops `Authorization` when a
    redirect leaves the origin (a hub's CDN must not see the token), as `huggingface_hub` does."""
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        headers={"user-agent": "modelfleet-files/1", "accept-encoding": "identity"},
    )


def refusal(response: httpx.Response, what: str) -> FilesError:
    """The hub's answer as an error naming `what` (a repository or a file) and the reason."""
    code = response.headers.get("x-error-code", "")
    message = response.headers.get("x-error-message", "")
    if not message:
        try:
            response.read()  # a streamed answer (a ranged GET) has not read its body yet
            body = response.json()
            message = str(body.get("error") or body.get("Message") or "") if isinstance(body, dict) else ""
        except (ValueError, httpx.HTTPError, httpx.StreamError):  # no JSON, or the body was cut
            message = ""
    status = response.status_code
    said = f": {message}" if message else ""
    if code == "GatedRepo" or (status in (401, 403) and "gated" in message.lower()):
        return SourceRefused(
            f"{what} is gated ({status}){said}; accept its terms on the hub with the account whose token "
            "the region's model_hub.token_secret names"
        )
    if status == 401:
        return SourceRefused(
            f"{what} needs authentication (401{', ' + code if code else ''}){said}; it is private or gated, "
            "or the token is wrong: set the region's model_hub.token_secret"
        )
    if status == 403:
        return SourceRefused(f"{what}: access forbidden (403){said}; the token lacks access to it")
    if status == 404:
        kind = {"RevisionNotFound": "revision", "EntryNotFound": "file"}.get(code, "repository")
        return SourceRefused(f"{what}: {kind} not found (404){said}")
    if status in RETRYABLE_STATUS:
        return SourceUnavailable(f"{what}: the hub answered {status}{said}", _retry_after(response))
    return SourceRefused(f"{what}: the hub answered {status}{said}")


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (a date form is ignored: back-off applies), at most MAX_RETRY_AFTER."""
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return None


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before attempt `attempt + 1`: exponential with full jitter (no thundering herd of
    parts against a hub that just said 429)."""
    return random.uniform(0, min(cap, base * 2**attempt))


def retrying(
    call: Callable[[], T],
    *,
    attempts: int,
    cancel: threading.Event,
    base: float = 0.5,
    on_retry: Callable[[int, FilesError], None] | None = None,
) -> T:
    """`call()` until it succeeds, a non-retryable error, `attempts` tries or a cancel."""
    for attempt in range(attempts):
        if cancel.is_set():
            raise Cancelled("cancelled")
        try:
            return call()
        except FilesError as exc:
            if not exc.retryable or attempt + 1 >= attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            wait = backoff(attempt, base)
            if isinstance(exc, SourceUnavailable) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)  # the hub said when; sooner would be refused again
            if cancel.wait(wait):
                raise Cancelled("cancelled") from exc
    raise AssertionError("unreachable")  # attempts >= 1


def get_json(
    http: httpx.Client, url: str, headers: Mapping[str, str], what: str
) -> tuple[object, httpx.Response]:
    """A JSON document from the hub, transport failures as retryable errors."""
    try:
        response = http.get(url, headers=dict(headers))
    except httpx.TransportError as exc:
        raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc or 'no answer'} ({url})") from exc
    if response.status_code != 200:
        raise refusal(response, what)
    try:
        return response.json(), response
    except ValueError as exc:
        raise SourceUnavailable(f"{what}: the hub answered with something that is not JSON") from exc


def read_range(
    http: httpx.Client,
    url: str,
    headers: Mapping[str, str],
    start: int,
    length: int,
    *,
    what: str,
    cancel: threading.Event,
    progress: Callable[[int], None],
    into: bytearray | None = None,
) -> bytearray:
    """Bytes `start .. start+length-1` of `url`, exactly (into `into` when given, of that length); a
    short or cut body is retryable."""
    buf = into if into is not None else bytearray(length)
    view = memoryview(buf)
    got = 0
    wanted = {**headers, "range": f"bytes={start}-{start + length - 1}"}
    try:
        with http.stream("GET", url, headers=wanted) as response:
            if response.status_code == 200 and not (start == 0 and _length(response) == length):
                raise RangeIgnored(f"{what}: the server ignores Range requests")
            if response.status_code not in (200, 206):
                raise refusal(response, what)
            for chunk in response.iter_raw(CHUNK):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                end = got + len(chunk)
                if end > length:
                    raise SourceUnavailable(f"{what}: the server sent more than the {length} bytes asked for")
                view[got:end] = chunk
                got = end
                progress(len(chunk))
    except httpx.TransportError as exc:
        progress(-got)  # these bytes will be read again
        raise SourceUnavailable(f"{what}: cut off at byte {start + got} ({type(exc).__name__})") from exc
    if got != length:
        progress(-got)
        raise SourceUnavailable(f"{what}: the body ended at byte {start + got}, expected {start + length}")
    return buf


def stream(
    http: httpx.Client, url: str, headers: Mapping[str, str], *, what: str, cancel: threading.Event
) -> Iterator[bytes]:
    """The whole body in chunks (for servers that ignore Range)."""
    try:
        with http.stream("GET", url, headers=dict(headers)) as response:
            if response.status_code != 200:
                raise refusal(response, what)
            for chunk in response.iter_raw(CHUNK):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                yield chunk
    except httpx.TransportError as exc:
        raise SourceUnavailable(f"{what}: cut off ({type(exc).__name__})") from exc


def _length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", "-1"))
    except ValueError:
        return -1


__all__ = ["RangeIgnored", "backoff", "client", "get_json", "read_range", "refusal", "retrying", "stream"]
