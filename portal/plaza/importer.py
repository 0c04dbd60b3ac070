"""Import plaza models from an index: fetch it, read it, and say per model what would happen.

Two index formats are read:

* ours, `{providers: [...], models: [...]}` with models in `ModelIn`'s shape (the seed catalog
  `portal/data/plaza.yaml` is one);
* the source product's `ModelSpec` (`apiVersion: model.hydra.io/v1alpha1`): one document, several
  documents, a list of them, a `ModelSpecList` (`items`) or a merged catalog index (`entries`).

Fetching is bounded: http/https only, a few redirects, an overall deadline (not only a per-read
timeout: a server dripping a byte a second must not hold a worker thread for minutes), a size cap,
and a cap on imports at once per process (beyond it: 503), so slow indexes cannot take every thread
that serves other users. It refuses IP literals other than loopback, so the endpoint cannot probe a
network by address, and hosts that resolve to loopback or private addresses unless the operator
allows them (portal/addresses.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from pydantic import ValidationError

from portal import addresses
from portal.errors import Invalid, Unavailable
from portal.plaza.schemas import FieldProblem, ModelIn, ProviderIn

MAX_INDEX_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0  # per connect and per read; the deadline may pass by one of these at most
MAX_REDIRECTS = 3

# ModelSpec capability tags (BaizeAI/modelhub api/v1alpha1) -> plaza capabilities.
MODELSPEC_TAGS = {
    "TEXT_GENERATION": "text-generation",
    "IMAGE_TO_TEXT": "vision",
    "VIDEO_TO_TEXT": "video-understanding",
    "TEXT_TO_VIDEO": "video-generation",
    "IMAGE_TO_IMAGE": "image-editing",
    "TEXT_TO_IMAGE": "image-generation",
    "EMBEDDING": "embedding",
    "RERANK_MODEL": "rerank",
    "AUDIO_TO_AUDIO": "audio-to-audio",
    "AUDIO_TO_TEXT": "speech-to-text",
    "TEXT_TO_AUDIO": "text-to-speech",
    "TOOLS": "tools",
}
# Where a plaza field came from in a ModelSpec, so an error names the field the author wrote.
MODELSPEC_PATHS = {
    "id": "metadata.name",
    "name": "spec.descriptor.display",
    "description": "spec.descriptor.description",
    "icon": "spec.descriptor.icon.src",
    "provider": "spec.descriptor.provider.id",
    "capabilities": "spec.descriptor.tags",
    "source_uri": "spec.source.huggingface.name",
    "context_length": "spec.config.maxTokens",
}
MODELSPEC_API = "model.hydra.io/"


# ------------------------------------------------------------------------------------------ fetch


def _refuse(message: str) -> Invalid:
    return Invalid.field("url", message)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    deadline_seconds: float = 20.0
    max_bytes: int = MAX_INDEX_BYTES
    allow_private: bool = False


class ImportGate:
    """At most `size` fetches at once in this process; one more is answered 503 at once (it does
    not queue: a queue of slow fetches is the thread exhaustion this prevents)."""

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self.size = size

    def __enter__(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise Unavailable(f"{self.size} imports from URLs are running already; try again shortly")

    def __exit__(self, *_: object) -> None:
        self._slots.release()


def check_url(url: str, allow_private: bool = False) -> httpx.URL:
    """The URL if it may be fetched; 422 on `url` otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise _refuse(f"not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise _refuse(f"only http and https URLs can be fetched, not {parsed.scheme or 'a relative URL'!r}")
    host = parsed.host
    if not host:
        raise _refuse("the URL names no host")
    literal = addresses.ip_literal(host)
    if literal is not None and not literal.is_loopback:
        raise _refuse(f"name the host instead of the address {host}")
    addresses.check_host("url", host, parsed.port or (443 if parsed.scheme == "https" else 80), allow_private)
    return parsed


def fetch(url: str, limits: FetchLimits | None = None) -> bytes:
    """GET `url` (following up to 3 redirects, each checked) and return its body, within the limits:
    the deadline bounds the whole exchange, each read included."""
    limits = limits or FetchLimits()
    deadline = time.monotonic() + limits.deadline_seconds

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _refuse(f"fetching the index took longer than {limits.deadline_seconds:g} s")
        return left

    target = check_url(url, limits.allow_private)
    with httpx.Client(follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                timeout = httpx.Timeout(min(FETCH_TIMEOUT_SECONDS, remaining()))
                with client.stream(
                    "GET", target, headers={"Accept": "application/yaml, application/json"}, timeout=timeout
                ) as r:
                    if r.is_redirect and "location" in r.headers:
                        target = check_url(str(target.join(r.headers["location"])), limits.allow_private)
                        continue
                    if r.status_code >= 400:
                        raise _refuse(f"GET {target} answered {r.status_code} {r.reason_phrase}")
                    declared = r.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limits.max_bytes:
                        raise _refuse(f"the index is {int(declared)} bytes; the limit is {limits.max_bytes}")
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > limits.max_bytes:
                            raise _refuse(f"the index is larger than {limits.max_bytes} bytes")
                        remaining()  # a slow drip ends at the deadline, not after the last byte
                    return bytes(body)
            except httpx.TimeoutException as exc:
                remaining()  # past the deadline: say so
                raise _refuse(f"cannot fetch {target}: timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise _refuse(f"cannot fetch {target}: {exc or type(exc).__name__}") from exc
    raise _refuse(f"more than {MAX_REDIRECTS} redirects")


# ------------------------------------------------------------------------------------------- read


def read_documents(text: str, field_name: str = "url") -> list[Any]:
    """Every YAML document in `text` (JSON is YAML too); 422 naming `field_name` when it is neither."""
    stripped = text.lstrip()
    try:
        if stripped[:1] in ("{", "["):
            try:
                return [json.loads(stripped)]
            except json.JSONDecodeError:
                pass  # YAML flow style, not JSON
        docs = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise Invalid.field(field_name, f"the index is not YAML or JSON{where}") from exc
    if not docs:
        raise Invalid.field(field_name, "the index is empty")
    return docs


@dataclass
class Entry:
    """One model found in an index, converted to our shape (valid or not)."""

    format: str  # modelfleet | modelspec
    raw: dict[str, Any] | None
    model: ModelIn | None = None
    provider: ProviderIn | None = None
    problems: list[FieldProblem] = field(default_factory=list)


@dataclass
class Index:
    entries: list[Entry]
    providers: dict[str, ProviderIn]
    problems: list[str] = field(default_factory=list)  # parts that are not models (bad providers, …)


def _problems(
    exc: ValidationError, paths: Mapping[str, str] | None = None, prefix: str = ""
) -> list[FieldProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        head = loc[0] if loc else ""
        where = (paths or {}).get(head)
        name = where if where is not None else prefix + head
        for part in err["loc"][1:]:
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
        out.append(FieldProblem(field=name or "model", message=str(err["msg"]).removeprefix("Value error, ")))
    return out


def _text(value: Any) -> str:
    """An i18n value ({enUS, zhCN}) or a plain string, English first."""
    if isinstance(value, Mapping):
        for key in ("enUS", "en", "zhCN", "zh"):
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key]).strip()
        return ""
    return str(value).strip() if isinstance(value, str | int | float) else ""


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def from_modelspec(doc: Mapping[str, Any]) -> Entry:
    """A ModelSpec as a plaza model. Its deployments are not imported: they name GPU types, not a
    stack's templates and pools, so ops add deploy templates that the core can check."""
    problems: list[FieldProblem] = []
    name = _get(doc, "metadata", "name")
    descriptor = _get(doc, "spec", "descriptor") or {}
    caps: list[str] = []
    for i, tag in enumerate(_get(descriptor, "tags") or []):
        mapped = MODELSPEC_TAGS.get(str(tag).upper())
        if mapped is None:
            problems.append(
                FieldProblem(
                    field=f"spec.descriptor.tags[{i}]",
                    message=f"unknown tag {tag!r}; known: {', '.join(MODELSPEC_TAGS)}",
                )
            )
        elif mapped not in caps:
            caps.append(mapped)
    hf = _get(doc, "spec", "source", "huggingface", "name")
    links = [
        f"- [{_text(link.get('description')) or link.get('url')}]({link.get('url')})"
        for link in _get(descriptor, "links") or []
        if isinstance(link, Mapping) and isinstance(link.get("url"), str)
    ]
    description = _text(_get(descriptor, "description"))
    readme = "\n".join(p for p in (description, "## Links\n" + "\n".join(links) if links else "") if p)
    provider_id = _get(descriptor, "provider", "id")
    raw: dict[str, Any] = {
        "id": str(name).lower() if isinstance(name, str) else name,
        "name": _text(_get(descriptor, "display")) or name,
        "provider": str(provider_id).lower() if isinstance(provider_id, str) else provider_id,
        "capabilities": caps,
        "description": description,
        "readme": readme,
        "icon": _get(descriptor, "icon", "src") or None,
        "source_uri": f"hf://{hf}" if isinstance(hf, str) and hf else None,
        "context_length": _get(doc, "spec", "config", "maxTokens") or None,
    }
    entry = Entry("modelspec", raw, problems=problems)
    if isinstance(provider_id, str):
        provider = {
            "id": provider_id.lower(),
            "name": _text(_get(descriptor, "provider", "name")) or provider_id,
        }
        try:
            entry.provider = ProviderIn.model_validate(provider)
        except ValidationError as exc:
            problems += _problems(exc, prefix="spec.descriptor.provider.")
    if not problems:
        try:
            entry.model = ModelIn.model_validate(raw)
        except ValidationError as exc:
            problems += _problems(exc, MODELSPEC_PATHS)
    return entry


def _ours(raw: Any, providers: Mapping[str, ProviderIn]) -> Entry:
    if not isinstance(raw, Mapping):
        return Entry("modelfleet", None, problems=[FieldProblem(field="model", message="must be a mapping")])
    entry = Entry("modelfleet", dict(raw))
    try:
        entry.model = ModelIn.model_validate(raw)
    except ValidationError as exc:
        entry.problems = _problems(exc)
        return entry
    entry.provider = providers.get(entry.model.provider)
    return entry


def _is_modelspec(doc: Any) -> bool:
    return isinstance(doc, Mapping) and (
        doc.get("kind") == "ModelSpec" or str(doc.get("apiVersion", "")).startswith(MODELSPEC_API)
    )


def _modelspecs(doc: Any) -> list[Any] | None:
    """The ModelSpecs a document holds, or None when it is not in that format."""
    if _is_modelspec(doc) and doc.get("kind") != "ModelSpecList":
        return [doc]
    if isinstance(doc, Mapping):
        for key in ("items", "entries"):  # ModelSpecList; the catalog's merged index.yaml
            if isinstance(doc.get(key), list):
                return list(doc[key])
    if isinstance(doc, list) and doc and all(_is_modelspec(d) for d in doc):
        return list(doc)
    return None


def _walk(docs: list[Any], providers: dict[str, ProviderIn], problems: list[str]) -> Iterator[Entry]:
    for number, doc in enumerate(docs):
        specs = _modelspecs(doc)
        if specs is not None:
            for spec in specs:
                if _is_modelspec(spec):
                    yield from_modelspec(spec)
                else:
                    problem = FieldProblem(field="kind", message="not a ModelSpec (model.hydra.io/v1alpha1)")
                    yield Entry("modelspec", spec if isinstance(spec, dict) else None, problems=[problem])
            continue
        if isinstance(doc, Mapping) and ("models" in doc or "providers" in doc):
            for i, raw in enumerate(doc.get("providers") or []):
                try:
                    provider = ProviderIn.model_validate(raw)
                except ValidationError as exc:
                    problems.append(
                        f"providers[{i}]: " + "; ".join(f"{p.field}: {p.message}" for p in _problems(exc))
                    )
                    continue
                providers[provider.id] = provider
            for raw in doc.get("models") or []:
                yield _ours(raw, providers)
            continue
        if isinstance(doc, list):
            for raw in doc:
                yield _ours(raw, providers)
            continue
        problems.append(f"document {number + 1} is neither {{providers, models}} nor a ModelSpec")


def read_index(docs: list[Any], field_name: str = "url") -> Index:
    """The entries of every document; 422 naming `field_name` if nothing in it is a model."""
    providers: dict[str, ProviderIn] = {}
    problems: list[str] = []
    entries = list(_walk(docs, providers, problems))
    if not entries:
        detail = "; ".join(problems) or "no models in it"
        raise Invalid.field(
            field_name,
            f"not a model index ({detail}): expected {{providers: [...], models: [...]}} "
            "or ModelSpec documents",
        )
    for entry in entries:
        if entry.model is not None and entry.provider is None:
            entry.provider = providers.get(entry.model.provider)
    return Index(entries, providers, problems)


def parse_text(text: str, field_name: str = "url") -> Index:
    return read_index(read_documents(text, field_name), field_name)


def decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid.field("url", "the index is not UTF-8 text") from exc
