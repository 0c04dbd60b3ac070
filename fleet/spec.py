"""The typed description of a fleet: regions, GPU node pools, deploy templates, model servings.

Models are frozen and forbid unknown keys, so a typo in a stack file is an error with its path rather
than a silently ignored setting. Field-level rules live here; rules that relate several objects
(a placement's pool must be in the placement's region, ...) live in `fleet.stack`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# An image reference as the container runtime parses it (the distribution/reference grammar):
# [host[:port]/]path[:tag][@digest], path components lower-case. A reference the kubelet cannot parse
# fails only when the pod is created, so it is refused here, with the stack path.
_HOST_PART = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
_IMAGE_HOST = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?"
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
IMAGE_REF = re.compile(
    rf"^{_IMAGE_HOST}{_IMAGE_PATH}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
RESOURCE_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _dns_label(value: str, *, min_len: int = 1) -> str:
    if not min_len <= len(value) <= 63:
        raise ValueError(f"must be {min_len}-63 characters, got {len(value)}")
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


DnsLabel = Annotated[str, Field(min_length=1, max_length=63)]
EnvMap = dict[str, str]


def _check_env(env: EnvMap) -> EnvMap:
    for key in env:
        if not ENV_NAME.match(key):
            raise ValueError(f"env name {key!r} is not a valid environment variable name")
    return env


def _check_image(value: str) -> str:
    if not IMAGE_REF.match(value) or len(value) > 1024:
        raise ValueError(
            f"{value!r} is not an image reference: [registry[:port]/]name[:tag][@sha256:digest], "
            "with a lower-case name and no spaces (e.g. docker.io/vllm/vllm-openai:v0.33.0)"
        )
    return value


Image = Annotated[str, AfterValidator(_check_image)]


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise ValueError(f"label value {value!r} (key {key!r}) is not a valid label value")
    return labels


# ---------------------------------------------------------------------------------------- region


class SecretKey(Frozen):
    """One key of a Kubernetes Secret in the region's namespace (created by ops, never by the stack)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class ClusterAccess(Frozen):
    """How Pulumi reaches the region's cluster. The kubeconfig itself is a Pulumi config secret."""

    kubeconfig_secret: str | None = Field(
        default=None, description="name of the Pulumi config secret that holds the kubeconfig"
    )
    context: str | None = Field(default=None, description="kubeconfig context to use")
    cluster_identifier: str = Field(
        min_length=1,
        description="stable id: the provider (and every object) is replaced only when it changes",
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> ClusterAccess:
        if self.kubeconfig_secret is None and self.context is None:
            raise ValueError("set kubeconfig_secret (a Pulumi config secret) or context")
        return self


class ModelCache(Frozen):
    """Where weights live on the nodes once fetched from the model store."""

    pvc: str | None = None
    host_path: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelCache:
        if (self.pvc is None) == (self.host_path is None):
            raise ValueError("set exactly one of pvc or host_path")
        if self.host_path is not None and not self.host_path.startswith("/"):
            raise ValueError(f"host_path {self.host_path!r} must be absolute")
        return self


class ModelStore(Frozen):
    """An S3-compatible bucket with one folder per model (`<prefix>/<model id>/`)."""

    endpoint: str = Field(pattern=r"^https?://[^\s/]+")
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    credentials_secret: str = Field(
        description="Kubernetes Secret (in the region namespace) with AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY; never the keys themselves"
    )
    cache: ModelCache = ModelCache(host_path="/data/modelfleet/models")
    sync_image: Image = "docker.io/peakcom/s5cmd:v2.3.0"

    @field_validator("prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")


class ModelHub(Frozen):
    """How the region fetches `hf://` and `modelscope://` sources: from the hub, or a mirror of it."""

    image: Image | None = Field(
        default=None,
        description="image with huggingface_hub (hf://) and modelscope (modelscope://) installed; the "
        "engine image has huggingface_hub",
    )
    hf_endpoint: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+", description="HF_ENDPOINT, e.g. https://hf-mirror.com"
    )
    modelscope_endpoint: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+", description="MODELSCOPE_ENDPOINT (full URL)"
    )
    token_secret: SecretKey | None = Field(
        default=None, description="Secret key holding the hub token (HF_TOKEN / MODELSCOPE_API_TOKEN)"
    )


class Controllers(Frozen):
    """Controllers installed in the cluster; servings that need one elsewhere are refused."""

    leader_worker_set: bool = False
    keda: bool = False


class LocalRuntime(Frozen):
    """A `local` region is one machine: the control plane runs each replica's engine argv as a
    supervised process. `engines`: `installed` runs the engine program (it must be on PATH),
    `simulate` runs the engine simulator in its place (named as such everywhere), `auto` the
    program when it is on PATH, else the simulator."""

    engines: Literal["auto", "installed", "simulate"] = "auto"


class Region(Frozen):
    name: str
    display_name: str = ""
    runtime: Literal["kubernetes", "local"] = Field(
        default="kubernetes", description="kubernetes: applied by Pulumi; local: processes on this machine"
    )
    cluster: ClusterAccess | None = Field(default=None, description="kubernetes regions only")
    local: LocalRuntime | None = Field(default=None, description="local regions only")
    namespace: str = "modelfleet"
    model_store: ModelStore
    model_hub: ModelHub = ModelHub()
    gateway_domain: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    controllers: Controllers = Controllers()
    prometheus_url: str | None = Field(
        default=None, description="Prometheus the autoscaler queries (needed for autoscaling)"
    )

    _name = field_validator("name", "namespace")(_dns_label)

    @model_validator(mode="after")
    def _runtime_needs(self) -> Region:
        if self.runtime == "kubernetes" and self.cluster is None:
            raise ValueError("cluster: required for a kubernetes region (or set runtime: local)")
        if self.runtime == "local" and self.cluster is not None:
            raise ValueError("cluster: a local region runs on this machine and has no cluster")
        if self.runtime == "kubernetes" and self.local is not None:
            raise ValueError("local: only for regions with runtime: local")
        return self


# ----------------------------------------------------------------------------------- node pools


class Taint(Frozen):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class NodeCount(Frozen):
    min: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> NodeCount:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class PoolNetwork(Frozen):
    """How the members of a multi-node replica reach each other; rendered on every member."""

    interface: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:^,-]+$",
        description="NIC for NCCL/GLOO/HCCL/TP sockets (eth0, net1, bond0); the vendor's default otherwise",
    )
    rdma_resource: str | None = Field(
        default=None,
        pattern=RESOURCE_NAME,
        description="RDMA device plugin resource, e.g. rdma/hca_shared_devices_a or rdma/roce_gdr",
    )
    rdma_count: int = Field(default=1, ge=1, le=64, description="RDMA devices per pod")
    ib_hca: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:,^=-]+$", description="NCCL_IB_HCA")
    ib_gid_index: int | None = Field(default=None, ge=0, le=255, description="NCCL_IB_GID_INDEX (RoCEv2: 3)")
    host_network: bool = Field(default=False, description="pods use the node's network namespace")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="e.g. Multus k8s.v1.cni.cncf.io/networks: roce-p2"
    )

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY.match(key):
                raise ValueError(f"annotation key {key!r} is not a valid Kubernetes annotation key")
        return value


class GpuNodePool(Frozen):
    """One homogeneous set of accelerator nodes in one region."""

    name: str
    region: str
    accelerator: str = Field(
        pattern=r"^[a-z0-9]+/[a-z0-9][-a-z0-9.]*$",
        description="vendor/model, e.g. ascend/910b3 or nvidia/h100-80g",
    )
    family: str | None = Field(default=None, description="accelerator family (catalog default)")
    devices_per_node: int = Field(ge=1, le=64)
    memory_per_device_gib: float | None = Field(default=None, gt=0)
    nodes: int | NodeCount
    resource_name: str | None = Field(
        default=None, description="extended resource the device plugin advertises on these nodes"
    )
    sharing: Literal["none", "hami"] = "none"
    node_selector: dict[str, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    cpu_arch: Literal["amd64", "arm64"] = "amd64"
    cpu_per_node: float | None = Field(
        default=None, gt=0, le=4096, description="allocatable CPUs per node (pods are sized from it)"
    )
    memory_per_node_gib: float | None = Field(
        default=None, gt=0, le=65536, description="allocatable memory per node, GiB"
    )
    hami_cores_percent: int | None = Field(
        default=None, ge=1, le=100, description="HAMi pools: share of each device's cores a pod gets"
    )
    network: PoolNetwork = PoolNetwork()

    _name = field_validator("name")(_dns_label)
    _selector = field_validator("node_selector")(_check_labels)

    @model_validator(mode="after")
    def _cores_need_hami(self) -> GpuNodePool:
        if self.hami_cores_percent is not None and self.sharing != "hami":
            raise ValueError("hami_cores_percent is for pools with sharing: hami")
        return self

    @property
    def vendor(self) -> str:
        return self.accelerator.split("/", 1)[0]

    @property
    def model(self) -> str:
        return self.accelerator.split("/", 1)[1]

    @property
    def node_count(self) -> int:
        """Nodes counted for capacity: the fixed count, or the autoscaler's maximum."""
        return self.nodes if isinstance(self.nodes, int) else self.nodes.max

    @property
    def devices(self) -> int:
        return self.node_count * self.devices_per_node


# ------------------------------------------------------------------------------ deploy template


class Probes(Frozen):
    path: str | None = Field(default=None, description="HTTP health path; engine default if unset")
    startup_budget_seconds: int | None = Field(
        default=None, ge=60, description="time allowed to load the model; sized from it if unset"
    )


class DeployTemplate(Frozen):
    """A deploy profile: an engine at a pinned version, its images, defaults and probes."""

    name: str
    engine: Literal["vllm", "sglang", "sglang-diffusion", "mindie", "custom"]
    engine_version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")
    runtime: str | None = Field(
        default=None,
        description="custom engines: the template file templates/engines/custom/<runtime>.j2",
    )
    entrypoint: tuple[str, ...] | None = Field(default=None, description="custom engines only")
    validate_flags: bool = Field(
        default=True,
        description="custom engines without a flag schema must say so explicitly (reported)",
    )
    images: dict[str, Image] = Field(
        default={}, description="image per 'vendor' or 'vendor/family'; catalog default otherwise"
    )
    args: tuple[str, ...] = ()
    env: EnvMap = Field(default_factory=dict)  # a factory: pydantic deep-copies literal defaults
    port: int | None = Field(default=None, ge=1, le=65535)
    probes: Probes = Probes()
    model_mount_path: str = Field(default="/models", pattern=r"^/[^\s]*$")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    multi_node: Literal["auto", "native", "ray"] = "auto"

    _name = field_validator("name")(_dns_label)
    _env = field_validator("env")(_check_env)

    @model_validator(mode="after")
    def _custom_needs_runtime(self) -> DeployTemplate:
        if self.engine == "custom":
            if self.runtime is None or self.entrypoint is None:
                raise ValueError("custom engines need runtime (template name) and entrypoint")
        elif self.runtime is not None or self.entrypoint is not None:
            raise ValueError(f"runtime and entrypoint are for custom engines, not {self.engine}")
        if not self.validate_flags and self.engine != "custom":
            raise ValueError(f"{self.engine} flags are always validated")
        return self


# ------------------------------------------------------------------------------- model serving


# What a model serves: the same words as the plaza and the gateway (store.vocabulary.Capability;
# `fleet` imports nothing of ours, so a test keeps the two lists equal).
ModelCapability = Literal[
    "text-generation",
    "reasoning",
    "tools",
    "vision",
    "embedding",
    "rerank",
    "image-generation",
    "image-editing",
    "speech-to-text",
    "text-to-speech",
    "audio-to-audio",
    "video-understanding",
    "video-generation",
]
Quantization = Literal["fp8", "awq", "gptq", "w8a8", "w4a16", "ascend", "compressed-tensors"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
SOURCE_URI = re.compile(r"^(s3|hf|modelscope|pvc)://([^\s/@]+)(/[^\s@]*)?(@[^\s/@]+)?$")


class ModelSource(Frozen):
    """A model outside the catalog: where its weights are and what the planner needs to size it.

    `s3://bucket/path` is synced from the region's store endpoint; `pvc://claim/path` is mounted
    read-only; `hf://org/name[@revision]` and `modelscope://org/name[@revision]` are fetched from the hub
    (or the region's mirror)."""

    uri: str = Field(
        description="s3://bucket/path, pvc://claim/path, hf://org/name[@rev], modelscope://org/name[@rev]"
    )
    params_b: float = Field(gt=0, description="parameters, in billions")
    dtype: Literal["bfloat16", "float16", "float32", "fp8", "int8", "int4"]
    quantization: Quantization | None = Field(
        default=None, description="the checkpoint's quant_method; fp8 weights imply fp8"
    )
    num_layers: int | None = Field(default=None, ge=1)
    num_attention_heads: int | None = Field(default=None, ge=1)
    num_kv_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    max_position_embeddings: int | None = Field(default=None, ge=1)
    capabilities: tuple[ModelCapability, ...] = Field(
        default=("text-generation",),
        min_length=1,
        description="what the model serves (plaza vocabulary); decides which engines can run it",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        match = SOURCE_URI.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a model source: use s3://bucket/path, pvc://claim/path, "
                "hf://org/name[@revision] or modelscope://org/name[@revision]"
            )
        scheme, _, path, revision = match.groups()
        if scheme in ("hf", "modelscope") and (not path or path.count("/") != 1 or path == "/"):
            raise ValueError(f"{value!r}: a hub source is {scheme}://<org>/<name>[@revision]")
        if scheme in ("s3", "pvc") and revision:
            raise ValueError(f"{value!r}: only hub sources take an @revision")
        return value

    @model_validator(mode="after")
    def _weights_format(self) -> ModelSource:
        if self.dtype in ("int8", "int4") and self.quantization in (None, "fp8"):
            raise ValueError(
                f"{self.dtype} weights come in a quantization format: set quantization "
                "(awq, gptq, compressed-tensors, w8a8, ascend, w4a16)"
            )
        if self.quantization == "fp8" and self.dtype != "fp8":
            raise ValueError("an fp8 checkpoint holds fp8 weights: set dtype: fp8")
        return self

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def checkpoint_quantization(self) -> Quantization | None:
        return "fp8" if self.quantization is None and self.dtype == "fp8" else self.quantization


class Parallelism(Frozen):
    tensor: int = Field(ge=1, le=256)
    pipeline: int = Field(default=1, ge=1, le=64)
    data: int = Field(default=1, ge=1, le=256)
    nodes: int | None = Field(default=None, ge=1, le=64, description="nodes per replica")


class Placement(Frozen):
    region: str
    pool: str
    replicas: int = Field(default=1, ge=0, le=1000)
    weight: int = Field(default=100, ge=0, le=10000, description="routing weight; 0 drains")
    parallelism: Literal["auto"] | Parallelism | None = Field(
        default=None, description="overrides the serving's parallelism on this pool"
    )


class Autoscaling(Frozen):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    metric: Literal["waiting_requests", "running_requests", "kv_cache_usage"] = "waiting_requests"
    target: float = Field(default=5, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})"
            )
        return self


PerPrompt = Annotated[int, Field(ge=0, le=1000)]


class ModelServing(Frozen):
    name: str
    workspace: str = "platform"
    model: str | ModelSource = Field(description="catalog id, or an explicit source")
    template: str
    placements: tuple[Placement, ...] = Field(min_length=1)
    parallelism: Literal["auto"] | Parallelism = "auto"
    max_model_len: int | None = Field(default=None, ge=128, le=10_000_000)
    quantization: Quantization | None = None
    dtype: Dtype | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    extra_args: tuple[str, ...] = ()
    env: EnvMap = Field(default_factory=dict)
    secret_env: dict[str, SecretKey] = Field(
        default_factory=dict, description="env from Secret keys (API keys, hub tokens): never plain values"
    )
    autoscaling: Autoscaling | None = None
    public_model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][-A-Za-z0-9._:/]*$")
    multimodal_limits: dict[Literal["image", "video", "audio"], PerPrompt] | None = Field(
        default=None,
        description="vLLM --limit-mm-per-prompt: most items of each kind in one prompt (engine "
        "default 999); only for a model that reads that kind of input",
    )

    _env = field_validator("env", "secret_env")(_check_env)

    @field_validator("name")
    @classmethod
    def _serving_name(cls, value: str) -> str:
        return _dns_label(value, min_len=2)

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str) -> str:
        return _dns_label(value)

    @property
    def served_name(self) -> str:
        """The model name clients send, through the gateway and to the engine."""
        return self.public_model_name or self.name

    def parallelism_on(self, placement: Placement) -> Literal["auto"] | Parallelism:
        return placement.parallelism if placement.parallelism is not None else self.parallelism


# ---------------------------------------------------------------------------------- model files

MODEL_ID = r"^[a-z0-9][a-z0-9._-]{0,127}$"


class FilesRegion(Frozen):
    """One cluster region a model's files are copied into, and which attempt: a retry is a new Job."""

    name: str
    attempt: int = Field(default=1, ge=1, le=100_000)


class ModelFiles(Frozen):
    """A model's files copied into cluster regions' stores by a Job per region
    (`stacks/<stack>/model-files/<name>.yaml`, one file per request, written by the portal).

    `name` is the plaza model's id: the files land in `<model_store.prefix>/<name>`, the folder a
    serving of that model syncs from. `id` is the portal's request, which the Job reports to."""

    name: str = Field(pattern=MODEL_ID, max_length=128)
    id: int = Field(ge=1, description="the portal's model-files request (the Job reports to it)")
    source: Literal["hf", "modelscope", "s3", "https"]
    repository: str = Field(min_length=1, max_length=2048)
    revision: str = Field(default="", max_length=255)
    include: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    exclude: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    regions: tuple[FilesRegion, ...] = Field(min_length=1)
    image: Image = Field(description="the portal's image: it holds the downloader")
    report_url: str = Field(
        pattern=r"^https?://[^\s/]+[^\s]*$", description="the portal as clusters reach it"
    )
    report_token: SecretKey = SecretKey(name="modelfleet-files-report", key="token")


# -------------------------------------------------------------------------------------- gateway

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


class GatewayAutoscaling(Frozen):
    """A HorizontalPodAutoscaler on CPU: the gateway is CPU-bound (parsing, relaying, metering)."""

    min_replicas: int = Field(default=2, ge=1, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    cpu_utilization: int = Field(default=70, ge=10, le=100, description="target mean CPU, % of the request")

    @model_validator(mode="after")
    def _ordered(self) -> GatewayAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})"
            )
        return self


class Gateway(Frozen):
    """The MaaS gateway (`python -m gateway`) on each region's cluster, several replicas
    sharing limits through Redis and writing usage to the portal's database."""

    image: Image = Field(description="the Modelfleet portal image")
    regions: tuple[str, ...] | None = Field(
        default=None, description="where to run it; default: every region"
    )
    replicas: int = Field(default=3, ge=1, le=1000, description="fixed replica count when autoscaling is off")
    autoscaling: GatewayAutoscaling | None = GatewayAutoscaling()
    port: int = Field(default=8080, ge=1024, le=65535)
    cpu: str = Field(default="1", pattern=QUANTITY, description="CPU request (the autoscaler's 100 %)")
    memory: str = Field(default="1Gi", pattern=QUANTITY, description="memory request")
    memory_limit: str = Field(default="2Gi", pattern=QUANTITY)
    database_url: SecretKey = SecretKey(name="modelfleet-gateway", key="database-url")
    redis_url: SecretKey = SecretKey(name="modelfleet-gateway", key="redis-url")
    pepper: SecretKey = Field(
        default=SecretKey(name="modelfleet-gateway", key="pepper"),
        description="the portal's MODELFLEET_PEPPER: API keys are verified with it",
    )
    env: EnvMap = Field(default_factory=dict, description="more MODELFLEET_* settings")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"

    _env = field_validator("env")(_check_env)

    @property
    def min_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas


class Platform(Frozen):
    """Stack-wide settings."""

    kubernetes_version: str = Field(default="1.33", pattern=r"^1\.[0-9]+$")
    image_pull_secrets: tuple[str, ...] = ()
    gateway: Gateway | None = Field(default=None, description="run the MaaS gateway on the clusters")
