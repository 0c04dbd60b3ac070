"""Reading Kubernetes objects the way the rules need them, from plain data in wire format.

Objects arrive as the engine hands them to a policy: camelCase keys, numbers possibly as floats, and
wrapped in `pulumi_policy`'s unknown-checking proxy (a `Mapping`/`Sequence`, not a dict/list). So
everything here goes through the abstract types and never copies a whole object.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from fleet import catalog

Obj = Mapping[str, Any]
LABEL = "modelfleet.io"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "LeaderWorkerSet")
SHELLS = ("/bin/sh", "/bin/bash", "sh", "bash")

TENSOR = ("--tensor-parallel-size", "-tp", "--tp-size", "--tp", "--world-size")
PIPELINE = ("--pipeline-parallel-size", "-pp", "--pp-size", "--pp")
DATA = ("--data-parallel-size", "-dp", "--dp-size", "--dp")
NNODES = ("--nnodes",)
SERVED_NAME = ("--served-model-name", "--model-name")
ENGINES = ("vllm", "sglang", "mindie")


def mapping(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def at(obj: Any, *path: str) -> Any:
    """obj[path0][path1]...; None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def as_int(value: Any) -> int | None:
    """Counts and quantities ('8', 8, 8.0) as ints; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def kind(obj: Obj) -> str:
    return str(obj.get("kind") or "")


def describe(obj: Obj) -> str:
    """`Deployment modelfleet/qwen-east-h100`: how messages name an object."""
    meta = mapping(obj.get("metadata"))
    name = str(meta.get("name") or "<unnamed>")
    ns = meta.get("namespace")
    return f"{kind(obj) or 'object'} {ns}/{name}" if ns else f"{kind(obj) or 'object'} {name}"


def labels(obj: Obj) -> Obj:
    return mapping(at(obj, "metadata", "labels"))


def annotation(obj: Obj, key: str) -> str | None:
    value = at(obj, "metadata", "annotations", f"{LABEL}/{key}")
    return str(value) if value is not None else None


def is_workload(obj: Obj) -> bool:
    return kind(obj) in WORKLOAD_KINDS


@dataclass(frozen=True, slots=True)
class PodTemplate:
    role: str  # '' for a Deployment's pods, 'leader' / 'worker' for a LeaderWorkerSet
    serves: bool  # its pods answer HTTP (probes expected)
    spec: Obj
    labels: Obj

    def where(self, container: Obj) -> str:
        name = container.get("name", "?")
        return f"{self.role} container {name}" if self.role else f"container {name}"


def pod_templates(obj: Obj) -> list[PodTemplate]:
    def template(role: str, serves: bool, tpl: Any) -> PodTemplate:
        return PodTemplate(role, serves, mapping(at(tpl, "spec")), mapping(at(tpl, "metadata", "labels")))

    k = kind(obj)
    if k == "LeaderWorkerSet":
        lwt = mapping(at(obj, "spec", "leaderWorkerTemplate"))
        worker = lwt.get("workerTemplate")
        # Without a leaderTemplate, the leader runs the worker template.
        leader = lwt.get("leaderTemplate") or worker
        return [template("leader", True, leader), template("worker", False, worker)]
    if k in WORKLOAD_KINDS:
        return [template("", True, at(obj, "spec", "template"))]
    if k == "Pod":
        return [template("", True, obj)]
    return []


def containers(pod: Obj, *, init: bool = False) -> list[Obj]:
    main = [mapping(c) for c in seq(pod.get("containers"))]
    return main + [mapping(c) for c in seq(pod.get("initContainers"))] if init else main


def group_size(obj: Obj) -> int:
    """Pods per replica: a LeaderWorkerSet's group size, else 1."""
    if kind(obj) == "LeaderWorkerSet":
        return as_int(at(obj, "spec", "leaderWorkerTemplate", "size")) or 1
    return 1


def replicas(obj: Obj) -> int:
    value = at(obj, "spec", "replicas")
    return 1 if value is None else as_int(value) or 0


# ------------------------------------------------------------------------------- engine argv


def argv(container: Obj) -> list[str]:
    """The container's command line; a `sh -c` script is split and read from its last `exec`."""
    tokens = [str(t) for t in seq(container.get("command")) + seq(container.get("args"))]
    if len(tokens) >= 3 and tokens[0] in SHELLS and tokens[1] == "-c":
        try:
            words = shlex.split(tokens[2])
        except ValueError:
            return tokens
        if "exec" in words:
            words = words[len(words) - words[::-1].index("exec") :]
        return words
    return tokens


def _norm(flag: str) -> str:
    return flag.replace("_", "-")


def flag(tokens: Sequence[str], names: Iterable[str]) -> str | None:
    """The value of the last of `names` (`--x v` or `--x=v`) in `tokens`; '' for a bare flag."""
    wanted = {_norm(n) for n in names}
    found: str | None = None
    for i, token in enumerate(tokens):
        key, eq, value = token.partition("=")
        if _norm(key) not in wanted:
            continue
        if eq:
            found = value
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            found = tokens[i + 1]
        else:
            found = ""
    return found


def engine_of(obj: Obj, tokens: Sequence[str]) -> str | None:
    """vllm / sglang / mindie from the workload's annotation, else from the command line."""
    noted = annotation(obj, "engine")
    if noted:
        return noted.split()[0]
    joined = " ".join(tokens[:4])
    if tokens[:2] == ["vllm", "serve"] or "vllm.entrypoints" in joined:
        return "vllm"
    if "sglang.launch_server" in joined:
        return "sglang"
    if "mindie" in joined or any(t.endswith("/launch.py") for t in tokens[:3]):
        return "mindie"
    return None


@dataclass(frozen=True, slots=True)
class Layout:
    tensor: int
    pipeline: int
    data: int
    nnodes: int | None

    @property
    def devices(self) -> int:
        return self.tensor * self.pipeline * self.data


def layout(tokens: Sequence[str]) -> Layout:
    def number(names: tuple[str, ...]) -> int:
        return as_int(flag(tokens, names)) or 1

    return Layout(number(TENSOR), number(PIPELINE), number(DATA), as_int(flag(tokens, NNODES)))


# ------------------------------------------------------------------------------- accelerators


@cache
def resource_vendors() -> tuple[dict[str, str], dict[str, str]]:
    """(exact device resource name -> vendor, resource domain -> vendor) from the catalog."""
    names: dict[str, str] = {}
    domains: dict[str, str] = {}
    for vendor_name, vendor in catalog.vendors().items():
        for resource in (vendor.resource_name, vendor.hami_resource_name):
            names[resource] = vendor_name
            domains[resource.split("/", 1)[0]] = vendor_name
    return names, domains


def vendor_of(resource: str) -> str | None:
    """The accelerator vendor a resource belongs to: exact catalog names first, then the domain
    (`huawei.com/ascend-1980` is Ascend's even though the catalog names another plugin's)."""
    names, domains = resource_vendors()
    if resource in names:
        return names[resource]
    if "/" not in resource:
        return None
    return domains.get(resource.split("/", 1)[0])


def is_device_count(resource: str, pool_resource: str | None) -> bool:
    """Whole devices (or HAMi vGPUs), as opposed to HAMi's memory/core shares."""
    return resource == pool_resource or resource in resource_vendors()[0]


def quantity(value: Any) -> str | None:
    if value is None:
        return None
    number = as_int(value)
    return str(number) if number is not None else str(value)


def accelerator_resources(container: Obj) -> dict[str, tuple[str | None, str | None]]:
    """Accelerator resources a container asks for: name -> (request, limit)."""
    requests = mapping(at(container, "resources", "requests"))
    limits = mapping(at(container, "resources", "limits"))
    out: dict[str, tuple[str | None, str | None]] = {}
    for name in [*requests, *limits]:
        if vendor_of(str(name)) is not None:
            out[str(name)] = (quantity(requests.get(name)), quantity(limits.get(name)))
    return out


def pool_vendor(obj: Obj) -> str | None:
    accelerator = annotation(obj, "accelerator")
    return accelerator.split("/", 1)[0] if accelerator else None


def devices(container: Obj, pool_resource: str | None) -> int:
    """Devices one container holds (limits win, as the device plugin counts them)."""
    total = 0
    for name, (request, limit) in accelerator_resources(container).items():
        if is_device_count(name, pool_resource):
            total += as_int(limit if limit is not None else request) or 0
    return total


def engine_container(pod: Obj, pool_resource: str | None) -> Obj | None:
    """The container that runs the engine: the first holding devices, else the first one."""
    main = containers(pod)
    for c in main:
        if devices(c, pool_resource):
            return c
    return main[0] if main else None


# ------------------------------------------------------------------------------------ images

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None


def parse_image(image: str) -> ImageRef:
    """Split an image reference; Docker Hub is the registry when the first part is not a host."""
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    return ImageRef(registry, path, tag or None, digest)


def has_digest(image: str) -> bool:
    return bool(_DIGEST.search(image))
