"""Where a serving's weights come from, and how they reach the engine: every scheme honoured or refused.

| source | how the weights arrive |
| --- | --- |
| catalog model | an init container syncs `<bucket>/<prefix>/<id>` from the region's S3 store |
| `s3://bucket/path` | synced the same way from that bucket, through the region's store endpoint |
| `pvc://claim/path` | no fetch: the claim is mounted read-only at the model path (`subPath`) |
| `hf://org/name[@rev]` | an init container fetches it with huggingface_hub (or from `hf_endpoint`) |
| `modelscope://org/name[@rev]` | the same with the modelscope package (or `modelscope_endpoint`) |

Fetches land in the region's node cache (`model_store.cache`) and are idempotent. In a multi-node
group on a shared cache (a PVC), only the leader fetches; workers wait for its marker, so the weights
are fetched once per cache, not once per member. On a node-local cache every member fetches into its
own node's cache: once per node.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from fleet.errors import Issue
from fleet.spec import SOURCE_URI, DeployTemplate, ModelServing, ModelSource, Region

Scheme = Literal["s3", "pvc", "hf", "modelscope"]
HUB_ENGINES = ("vllm", "sglang")  # their images install huggingface_hub (a dependency of both)
READY_MARKER = ".modelfleet-ready"
WAIT_SECONDS = 10
WAIT_TRIES = 360  # a worker gives up after an hour: the group is recreated and tries again

# Runs in the fetch image; repository, revision and folder arrive as argv, never through a shell.
HUB_FETCH = """\
import sys
hub, repo, revision, dest = sys.argv[1:]
if hub == "hf":
    from huggingface_hub import snapshot_download
    snapshot_download(repo_id=repo, revision=revision or None, local_dir=dest)
else:
    from modelscope import snapshot_download
    snapshot_download(repo, revision=revision or None, local_dir=dest)
"""
# Workers on a shared cache wait for the leader's fetch; bounded, so a failed leader restarts the group.
# `$$` is the kubelet's escape for a literal `$` in command and args.
WAIT_FOR_MARKER = (
    'i=0; until [ -f "$0" ]; do i=$$((i+1)); '
    'if [ "$i" -gt "$1" ]; then echo "weights not ready: no $0" >&2; exit 1; fi; '
    f"sleep {WAIT_SECONDS}; done"
)


class Source(NamedTuple):  # a tuple: made for every pod rendered
    scheme: Scheme
    location: str  # bucket/path, claim, org/name
    path: str  # within the claim (pvc) or ''
    revision: str  # hub revision or ''

    @property
    def fetched(self) -> bool:
        return self.scheme != "pvc"

    @property
    def uri(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        path = f"/{self.path}" if self.path else ""
        return f"{self.scheme}://{self.location}{path}{rev}"


def parse(uri: str) -> Source:
    match = SOURCE_URI.match(uri)
    assert match is not None, uri  # ModelSource validated it
    scheme, first, rest, revision = match.groups()
    rest = (rest or "").strip("/")
    revision = (revision or "").lstrip("@")
    if scheme == "pvc":
        return Source("pvc", first, rest, "")
    return Source(scheme, f"{first}/{rest}" if rest else first, "", revision)  # type: ignore[arg-type]


def of(s: ModelServing, region: Region, model_id: str) -> Source:
    """The serving's source: its own uri, or the region's store folder for a catalog model."""
    if isinstance(s.model, ModelSource):
        return parse(s.model.uri)
    store = region.model_store
    prefix = f"{store.prefix}/" if store.prefix else ""
    return Source("s3", f"{store.bucket}/{prefix}{model_id}", "", "")


def fetch_image(source: Source, region: Region, t: DeployTemplate, engine_image: str) -> str | None:
    """The image that fetches a hub source: the region's, else the engine's where it has the client."""
    if region.model_hub.image is not None:
        return region.model_hub.image
    if source.scheme == "hf" and t.engine in HUB_ENGINES:
        return engine_image
    return None


def check(s: ModelServing, t: DeployTemplate, region: Region, path: str) -> list[Issue]:
    """A source the region cannot fetch is refused by name, never replaced by another."""
    if not isinstance(s.model, ModelSource):
        return []
    source = parse(s.model.uri)
    if source.scheme not in ("hf", "modelscope") or fetch_image(source, region, t, "engine") is not None:
        return []
    client = "huggingface_hub" if source.scheme == "hf" else "modelscope"
    return [
        Issue(
            f"{path}.model.uri",
            f"{source.scheme}:// sources are fetched with the {client} package, which the {t.engine} "
            f"image is not known to have; set regions[{region.name}].model_hub.image to an image "
            f"with {client} installed, or copy the weights to the region's store and use s3://",
        )
    ]


def hub_env(source: Source, region: Region) -> list[dict[str, object]]:
    hub = region.model_hub
    env: list[dict[str, object]] = []
    endpoint = hub.hf_endpoint if source.scheme == "hf" else hub.modelscope_endpoint
    if endpoint is not None:
        name = "HF_ENDPOINT" if source.scheme == "hf" else "MODELSCOPE_ENDPOINT"
        env.append({"name": name, "value": endpoint})
    if hub.token_secret is not None:
        name = "HF_TOKEN" if source.scheme == "hf" else "MODELSCOPE_API_TOKEN"
        ref = {"name": hub.token_secret.name, "key": hub.token_secret.key}
        env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def fetch_command(source: Source, region: Region, dest: str) -> tuple[list[str], list[dict[str, object]]]:
    """(argv, env) of the init container that brings `source` into the cache folder `dest`."""
    if source.scheme == "s3":
        store = region.model_store
        secret = store.credentials_secret
        env: list[dict[str, object]] = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
        return ["--endpoint-url", store.endpoint, "sync", f"s3://{source.location}/*", f"{dest}/"], env
    argv = ["python3", "-c", HUB_FETCH, source.scheme, source.location, source.revision, dest]
    return argv, hub_env(source, region)
