"""What the gateway knows about keys, workspaces, models and limits: an in-memory snapshot.

The request path never touches the database. It reads one immutable `Snapshot` (dicts keyed by public
id), replaced as a whole when something changes:

- **In this process** (the portal's API runs next to the gateway): `install_change_hook` listens to the
  portal's sessions; a commit that touched an API key, workspace, MaaS model, target or limit rule
  bumps `ConfigVersion`. The next gateway request sees the new number and waits for a fresh snapshot,
  so a key disabled through the portal answers 401 on the very next call.
- **In other processes** (several gateway replicas, or a portal process apart from the gateway): the
  gateway polls `fingerprint()` every `gateway_snapshot_poll_seconds` (one small aggregate query: row
  counts, highest ids and `updated_at` of those tables) and reloads when it changed; a full reload every
  `gateway_snapshot_reload_seconds` is the safety net (and refreshes the quota usage other replicas
  wrote).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, event, func, select
from sqlalchemy.orm import ORMExecuteState, Session, selectinload, sessionmaker

from gateway import secrets
from gateway.limits import Rule, rules_from_rows
from gateway.metering import Prices
from gateway.resources import Backing
from gateway.routing import Strategy
from gateway.settings import GatewaySettings
from store.models import (
    ApiKey,
    MaasModel,
    MaasTarget,
    PlazaModel,
    RateLimitRule,
    ServingPlacement,
    ServingReplica,
    Workspace,
)
from store.periods import aware

log = logging.getLogger("modelfleet.gateway")

PLATFORM = "platform"  # the owner of ops' servings (fleet.spec.ModelServing.workspace's default)
WATCHED = (ApiKey, Workspace, MaasModel, MaasTarget, RateLimitRule, ServingPlacement, ServingReplica)
_WATCHED_TABLES = frozenset(m.__tablename__ for m in WATCHED)

# The portal's strategy names (portal/api/maas.py) → the router's. `least_busy` is the router's
# least-outstanding-requests; `latency` prefers the gateway's own region (the lowest network latency)
# and spills over to the others (locality).
STRATEGIES = {
    "round_robin": Strategy.ROUND_ROBIN,
    "weighted": Strategy.WEIGHTED,
    "random": Strategy.RANDOM,
    "least_busy": Strategy.LEAST_OUTSTANDING,
    "least_outstanding": Strategy.LEAST_OUTSTANDING,
    "latency": Strategy.LOCALITY,
    "locality": Strategy.LOCALITY,
}


# -- change detection --------------------------------------------------------------------------------
class ConfigVersion:
    """A counter bumped after every commit that changed what the gateway serves (thread-safe)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.value = 0

    def bump(self) -> None:
        self.value = next(self._counter)


def config_version(services: Backing) -> ConfigVersion:
    version = services.extras.get("gateway_config_version")
    if version is None:
        version = services.extras.setdefault("gateway_config_version", ConfigVersion())
    assert isinstance(version, ConfigVersion)
    return version


def install_change_hook(services: Backing) -> ConfigVersion:
    """Bump the version after each commit of the portal's sessions that changed a watched table.

    Covers ORM changes (flushes) and bulk statements (`session.execute(delete(RateLimitRule)...)`).
    Idempotent per `services`.
    """
    version = config_version(services)
    if services.extras.get("gateway_change_hook"):
        return version
    services.extras["gateway_change_hook"] = True
    factory: sessionmaker[Session] = services.sessions

    def after_flush(session: Session, _context: Any) -> None:
        for obj in itertools.chain(session.new, session.dirty, session.deleted):
            if isinstance(obj, WATCHED):
                session.info["gateway_changed"] = True
                return

    def on_execute(state: ORMExecuteState) -> None:
        if (state.is_update or state.is_delete or state.is_insert) and _touches_watched(state):
            state.session.info["gateway_changed"] = True

    def after_commit(session: Session) -> None:
        if session.info.pop("gateway_changed", False):
            version.bump()

    def after_rollback(session: Session) -> None:
        session.info.pop("gateway_changed", None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "do_orm_execute", on_execute)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_soft_rollback", lambda session, _previous: after_rollback(session))
    return version


def _touches_watched(state: ORMExecuteState) -> bool:
    table = getattr(state.statement, "table", None)
    return getattr(table, "name", None) in _WATCHED_TABLES


def _fingerprint_statement() -> Select[Any]:
    parts: list[Any] = []
    for model in (ApiKey, Workspace, MaasModel, RateLimitRule, ServingPlacement, ServingReplica):
        parts += [func.count(model.id), func.max(model.id), func.max(model.updated_at)]
    parts += [func.count(MaasTarget.id), func.max(MaasTarget.id)]
    return select(*[select(p).scalar_subquery() for p in parts])


# Built once: constructing its twenty subqueries cost twice what running it does (~1.0 against
# 0.3 ms of CPU a poll, every second in every replica).
_FINGERPRINT = _fingerprint_statement()


def fingerprint(connection: Connection | Session) -> tuple[Any, ...]:
    """A cheap summary that changes when any watched row is created, edited or deleted."""
    return tuple(str(v) for v in connection.execute(_FINGERPRINT).one())


# -- the snapshot ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyEntry:
    public_id: str
    secret_hash: str
    workspace: str
    enabled: bool
    expires_at: datetime | None
    allowed_models: frozenset[str] | None  # None: every model visible to the workspace
    token_quota: int | None
    used_tokens: int
    quota_refresh: str | None
    quota_period_start: datetime | None


@dataclass(frozen=True, slots=True)
class WorkspaceEntry:
    slug: str
    token_quota: int | None
    used_tokens: int
    quota_refresh: str | None
    quota_period_start: datetime | None


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One upstream, resolved: where to send, what model name to send, which headers to add."""

    name: str  # unique per gateway: breakers are keyed by it
    url: str  # OpenAI-compatible base, ending before `/chat/completions`
    upstream_model: str | None
    weight: int
    priority: int
    region: str | None
    headers: tuple[tuple[str, str], ...] = ()
    healthy: bool = True
    kind: str = "external"


@dataclass(frozen=True, slots=True)
class Waiting:
    """A placement that should serve but has no ready replica: what the 503 says."""

    serving: str
    state: str
    ready: int
    desired: int
    since: datetime
    reason: str | None

    def describe(self, now: datetime) -> str:
        seconds = max(0, int((now - self.since).total_seconds()))
        if self.desired == 0:
            return f"{self.serving} is stopped (for {seconds} s); start it to call it again"
        doing = {"failed": "has failed", "committed": "is committed but not yet running"}
        said = f"{self.serving} {doing.get(self.state, 'is ' + self.state)}: "
        said += f"{self.ready} of {self.desired} replicas ready"
        said += f", for {seconds} s"
        return f"{said} ({self.reason})" if self.reason and self.state == "failed" else said


@dataclass(frozen=True, slots=True)
class ModelEntry:
    public_id: str
    enabled: bool
    visibility: str  # all | specified | none (MaaS offerings); workspace (a workspace's own serving)
    workspaces: frozenset[str]
    strategy: Strategy
    prices: Prices
    targets: tuple[TargetSpec, ...]
    created: int = 0  # Unix time, for /v1/models
    key: str = ""  # the router's key: the public id, or `<workspace>/<public id>` for own servings
    waiting: tuple[Waiting, ...] = ()
    capabilities: frozenset[str] | None = None  # what it serves (gateway/capabilities.py); None: unchecked
    image_sizes: frozenset[str] | None = None  # sizes /v1/images/generations offers; None: any

    def visible_to(self, workspace: str) -> bool:
        return self.visibility == "all" or workspace in self.workspaces

    @property
    def route_key(self) -> str:
        return self.key or self.public_id


@dataclass(frozen=True, slots=True)
class Snapshot:
    keys: dict[str, KeyEntry] = field(default_factory=dict)
    workspaces: dict[str, WorkspaceEntry] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)  # MaaS offerings, by public id
    own: dict[str, dict[str, ModelEntry]] = field(default_factory=dict)  # workspace → its servings
    rules: tuple[Rule, ...] = ()
    fingerprint: tuple[Any, ...] = ()
    version: int = 0  # the ConfigVersion it was loaded at


def resolve_secret(ref: str | None, settings: GatewaySettings) -> str | None:
    """`env:NAME` or `file:/path` → the secret, inside the namespace the operator allows
    (gateway/secrets.py); None when unset, refused, missing or unreadable (logged)."""
    return secrets.resolve(ref, settings)


class Loader:
    """Builds snapshots from the database and the stacks (blocking: call it in a worker thread)."""

    def __init__(self, services: Backing, simulator_url: str | None = None) -> None:
        self.services = services
        self.simulator_url = simulator_url
        self.lock = threading.Lock()  # held while reading usage, so it pairs with the usage writer
        self.placements: dict[tuple[str, str], list[ServingPlacement]] = {}

    def fingerprint(self) -> tuple[Any, ...]:
        with self.services.engine.connect() as connection:  # no ORM session: nothing to track
            return fingerprint(connection)

    def load(self, version: int) -> Snapshot:
        with self.services.sessions() as session:
            marker = fingerprint(session)
            workspaces = {
                w.slug: WorkspaceEntry(
                    w.slug,
                    w.token_quota,
                    w.used_tokens or 0,
                    w.quota_refresh,
                    aware(w.quota_period_start) if w.quota_period_start else None,
                )
                for w in session.scalars(select(Workspace))
            }
            keys: dict[str, KeyEntry] = {}
            for key, slug in session.execute(
                select(ApiKey, Workspace.slug).join(Workspace, ApiKey.workspace_id == Workspace.id)
            ):
                keys[key.public_id] = KeyEntry(
                    public_id=key.public_id,
                    secret_hash=key.secret_hash,
                    workspace=slug,
                    enabled=key.enabled,
                    expires_at=aware(key.expires_at) if key.expires_at else None,
                    allowed_models=None if key.allowed_models is None else frozenset(key.allowed_models),
                    token_quota=key.token_quota,
                    used_tokens=key.used_tokens or 0,
                    quota_refresh=key.quota_refresh,
                    quota_period_start=aware(key.quota_period_start) if key.quota_period_start else None,
                )
            self.placements = _placements_by_serving(session)
            plaza: dict[str, list[str]] = {
                pid: list(caps or ())
                for pid, caps in session.execute(select(PlazaModel.id, PlazaModel.capabilities))
            }
            models = {m.public_id: self._model(m, plaza) for m in session.scalars(select(MaasModel))}
            rules = tuple(rules_from_rows(session.scalars(select(RateLimitRule)).all()))
            own = self._own_servings()
        return Snapshot(keys, workspaces, models, own, rules, marker, version)

    def _model(self, m: MaasModel, plaza: dict[str, list[str]]) -> ModelEntry:
        targets: list[TargetSpec] = []
        waiting: list[Waiting] = []
        for t in m.targets:
            targets.extend(self._targets(m, t, waiting))
        seen: dict[str, int] = {}
        unique: list[TargetSpec] = []
        for spec in targets:  # two identical targets on one model still need distinct names
            n = seen.get(spec.name, 0)
            seen[spec.name] = n + 1
            unique.append(spec if n == 0 else _renamed(spec, f"{spec.name}#{n}"))
        return ModelEntry(
            public_id=m.public_id,
            enabled=m.enabled,
            visibility=m.visibility,
            workspaces=frozenset(m.visible_workspaces or ()),
            strategy=STRATEGIES.get(m.strategy, Strategy.ROUND_ROBIN),
            prices=Prices.of(
                m.price_input_per_m, m.price_output_per_m, m.price_cached_per_m, m.price_per_unit or 0
            ),
            targets=tuple(unique),
            created=int(aware(m.created_at).timestamp()),
            waiting=tuple(waiting),
            capabilities=_capabilities(m, plaza),
            image_sizes=None if m.image_sizes is None else frozenset(m.image_sizes),
        )

    def _targets(self, m: MaasModel, t: MaasTarget, waiting: list[Waiting]) -> Iterable[TargetSpec]:
        if t.kind == "external":
            secret = resolve_secret(t.secret_ref, self.services.settings)
            headers: tuple[tuple[str, str], ...] = ()
            healthy = True
            if secret is not None:
                headers = (("authorization", f"Bearer {secret}"),)
            elif t.secret_ref:
                log.warning("gateway: %s: secret %s not found; target skipped", m.public_id, t.secret_ref)
                healthy = False
            base = (t.base_url or "").rstrip("/")
            yield TargetSpec(
                name=f"ext:{base}#{t.upstream_model}",
                url=base,
                upstream_model=t.upstream_model,
                weight=t.weight,
                priority=t.priority,
                region=t.region,
                headers=headers,
                healthy=healthy,
                kind="external",
            )
            return
        if t.kind == "simulator":  # the demo's media models: answered by the simulator when one runs
            if self.simulator_url:
                url = f"{self.simulator_url.rstrip('/')}/v1"
                name = f"sim:{m.public_id}"
                yield TargetSpec(name, url, t.upstream_model, t.weight, t.priority, None, kind="simulated")
            return
        assert t.stack is not None and t.serving is not None
        placements = self.placements.get((t.stack, t.serving), ())
        if not placements:
            log.warning("gateway: %s: no serving %s in stack %s", m.public_id, t.serving, t.stack)
        for p in placements:
            if t.region is None or p.region == t.region:
                yield from self._placement_targets(p, t.weight, t.priority, waiting)

    def _placement_targets(
        self, p: ServingPlacement, weight: int, priority: int, waiting: list[Waiting]
    ) -> Iterable[TargetSpec]:
        """Where a placement can be reached now, from what was observed: each ready replica's own
        address (local regions), or the placement's in-cluster endpoint while some replica is ready
        (kubernetes regions). With the simulator standing in for clusters (`gateway_simulate_servings`,
        the demo) a kubernetes placement with replicas is answered by the simulator, named as such."""
        name = f"{p.stack}/{p.serving}/{p.region}/{p.pool}"
        weight = weight * (p.weight if p.desired_replicas else 0)
        if self.simulator_url and p.runtime == "kubernetes":
            url = f"{self.simulator_url.rstrip('/')}/v1"
            yield TargetSpec(name, url, p.public_name, weight, priority, p.region, kind="simulated")
            return
        ready = [r for r in p.replicas if r.state == "ready"]
        if not ready:  # say why, should nothing else of the model answer
            since = aware(p.state_since)
            waiting.append(Waiting(p.serving, p.state, 0, p.desired_replicas, since, p.reason))
        if p.runtime == "local":
            for r in ready:
                if r.url:
                    url = f"{r.url.rstrip('/')}/v1"
                    replica = f"{name}/{r.name}"
                    yield TargetSpec(replica, url, p.public_name, weight, priority, p.region, kind="serving")
            return
        if ready or p.ready_replicas:
            url = f"{p.endpoint.rstrip('/')}/v1"
            yield TargetSpec(name, url, p.public_name, weight, priority, p.region, kind="serving")

    def _own_servings(self) -> dict[str, dict[str, ModelEntry]]:
        """Every workspace's own servings, callable at once by that workspace's keys under their
        public model name (no MaaS model needed; unpriced: they run on the workspace's capacity)."""
        grouped: dict[tuple[str, str], list[ServingPlacement]] = {}
        for placements in self.placements.values():
            for p in placements:
                if p.workspace != PLATFORM:
                    grouped.setdefault((p.workspace, p.public_name), []).append(p)
        own: dict[str, dict[str, ModelEntry]] = {}
        for (workspace, public_name), placements in grouped.items():
            waiting: list[Waiting] = []
            targets = [t for p in placements for t in self._placement_targets(p, 1, 0, waiting)]
            created = min(aware(p.state_since) for p in placements)
            own.setdefault(workspace, {})[public_name] = ModelEntry(
                public_id=public_name,
                enabled=True,
                visibility="workspace",
                workspaces=frozenset({workspace}),
                strategy=Strategy.WEIGHTED,
                prices=Prices.of(0, 0, None),
                targets=tuple(targets),
                created=int(created.timestamp()),
                key=f"{workspace}/{public_name}",
                waiting=tuple(waiting),
            )
        return own


def _capabilities(m: MaasModel, plaza: dict[str, list[str]]) -> frozenset[str] | None:
    """The MaaS model's own list, else its plaza model's; None (unchecked) when neither says."""
    if m.capabilities is not None:
        return frozenset(m.capabilities)
    listed = plaza.get(m.plaza_model_id) if m.plaza_model_id else None
    return frozenset(listed) if listed else None


def _placements_by_serving(session: Session) -> dict[tuple[str, str], list[ServingPlacement]]:
    out: dict[tuple[str, str], list[ServingPlacement]] = {}
    query = select(ServingPlacement).options(selectinload(ServingPlacement.replicas))
    for p in session.scalars(query.order_by(ServingPlacement.position)):
        out.setdefault((p.stack, p.serving), []).append(p)
    return out


def _renamed(spec: TargetSpec, name: str) -> TargetSpec:
    return TargetSpec(
        name,
        spec.url,
        spec.upstream_model,
        spec.weight,
        spec.priority,
        spec.region,
        spec.headers,
        spec.healthy,
        spec.kind,
    )
