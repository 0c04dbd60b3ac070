"""How the portal reaches a `kubernetes` region's cluster: credentials → an authenticated client.

A region says how Pulumi reaches its cluster (`cluster.kubeconfig_secret`, the name of a Pulumi
config secret, or `cluster.context`); the portal never reads Pulumi's secrets, so ops give it its
own, read-only access under the same name: `MODELFLEET_KUBECONFIGS__<name>` = a kubeconfig file (a
mounted Secret), or `in-cluster` for the service account of the pod the portal runs in. A region
with no such entry is not watched (and says so once).

Credentials are read by lightkube (kubeconfig files with tokens, token files that rotate, client
certificates, exec plugins; the in-cluster service account), which also builds the authenticated
async HTTP client the observer streams over (`listwatch` explains why it does not use lightkube's own
watch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx2
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ConfigError

from fleet.spec import Region

IN_CLUSTER = "in-cluster"
CONNECT_SECONDS = 10.0


class AccessError(RuntimeError):
    """The region's credentials cannot be used (missing file, unknown context, bad kubeconfig)."""


@dataclass(frozen=True)
class RegionCluster:
    """One region of one stack, as the observer reaches it."""

    stack: str
    region: str
    namespace: str
    credentials: str  # the name the region gives its access (kubeconfig_secret or context)
    source: str  # a kubeconfig file, or `in-cluster`
    context: str | None = None

    @property
    def label(self) -> str:
        return f"{self.stack}/{self.region}"

    def client(self, *, read_seconds: float = 30.0) -> httpx2.AsyncClient:
        """A new authenticated client; the caller closes it. `read_seconds` bounds the wait for the
        next bytes (a watch sets it above its server-side timeout)."""
        try:
            config = (
                KubeConfig.from_service_account()
                if self.source == IN_CLUSTER
                else KubeConfig.from_file(self.source)
            )
            single = config.get(context_name=self.context)
        except (ConfigError, KeyError, OSError, ValueError) as exc:
            raise AccessError(f"region {self.label}: credentials {self.credentials!r}: {exc}") from exc
        assert single is not None  # get() without a default raises instead
        timeout = httpx2.Timeout(CONNECT_SECONDS, read=read_seconds)
        return client_adapter.AsyncClient(single, client_adapter.ConnectionParams(timeout=timeout))


def credentials_name(region: Region) -> str:
    if region.cluster is None:  # a local region: nothing to watch through an API server
        return ""
    return region.cluster.kubeconfig_secret or region.cluster.context or ""


def region_cluster(kubeconfigs: dict[str, str], stack: str, region: Region) -> RegionCluster | None:
    """The region as the observer reaches it, or None when the portal has no access configured."""
    name = credentials_name(region)
    source = kubeconfigs.get(name)
    if not source or region.cluster is None:
        return None
    if source != IN_CLUSTER and not Path(source).expanduser().is_file():
        raise AccessError(
            f"MODELFLEET_KUBECONFIGS__{name}: {source!r} is not a file (a kubeconfig, or {IN_CLUSTER!r})"
        )
    # With a kubeconfig of its own the region's `context` picks the context in it; without one
    # (kubeconfig_secret) the file's current context is used.
    context = region.cluster.context if source != IN_CLUSTER else None
    return RegionCluster(stack, region.name, region.namespace, name, source, context)
