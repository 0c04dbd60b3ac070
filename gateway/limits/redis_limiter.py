"""The shared limiter: every gateway replica decides against one Redis, one script call per request.

The whole admission (every scope, every unit, the leases) is one EVALSHA, so it is atomic and costs one
round trip; the clock is Redis `TIME`. Settlement (reconcile/release) is a second, off the hot path.
Key names and script arguments are precomputed per plan.

Faults (docs/gateway/limits.md, "Faults"): a call that fails on a stale connection is sent again on a
fresh one (`RedisLink`); when Redis really cannot answer, `FailurePolicy` decides, and the `local`
fallback starts every bucket used up and refills it at this replica's share of the rate, so the
replicas together never admit more than the shared limit would; what it admitted is charged to Redis
when Redis answers again. Concurrency falls back to the slots each replica held in Redis when Redis
went away (a stream that ends frees its slot for this replica's next): leases need not be spread
evenly, so a share of the limit could add up to more than it, while these slots add up to at most
what Redis held, which was within the limit.

Redis emptied (restarted without persistence, failed over to an empty replica) is noticed through
the epoch key: each replica puts back the bucket states it last saw (`_mirror`) before it is admitted
again, and lease sets refuse new leases for one lease lifetime while the heartbeats put the live
leases back -- the fallback's too, so they count once the calm is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.limits import lua
from gateway.limits.decision import Decision, LeaseState, Reservation, conclude
from gateway.limits.link import RedisLink
from gateway.limits.local import LocalLimiter, id_factory, monotonic_us
from gateway.limits.rules import MAX_TOKENS, TOKEN_UNITS, Bucket, Demand, Plan, Rule, RuleBook

log = logging.getLogger(__name__)


class OnFailure(StrEnum):
    FAIL_CLOSED = "fail_closed"  # refuse: acquire raises LimiterUnavailable (the gateway answers 503)
    LOCAL = "local"  # this replica's in-process limiter: its share of each rate, buckets starting used up
    FAIL_OPEN = "fail_open"  # admit without limits


_STRICTNESS = {OnFailure.FAIL_CLOSED: 2, OnFailure.LOCAL: 1, OnFailure.FAIL_OPEN: 0}


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What to do when Redis cannot answer, per unit class; a request follows its strictest bucket.

    Tokens fail closed by default: they are what budgets and upstream quotas are made of. Request
    rates and concurrency protect capacity, which this replica's own limiter still does roughly.
    """

    requests: OnFailure = OnFailure.LOCAL
    tokens: OnFailure = OnFailure.FAIL_CLOSED
    concurrency: OnFailure = OnFailure.LOCAL

    def for_plan(self, plan: Plan) -> OnFailure:
        policies = [self.concurrency] if plan.leases else []
        for bucket in plan.rates:
            policies.append(self.tokens if bucket.unit in TOKEN_UNITS else self.requests)
        return max(policies, key=_STRICTNESS.__getitem__, default=OnFailure.FAIL_OPEN)


class LimiterUnavailable(Exception):
    """The shared limiter cannot decide and the policy is fail_closed: answer 503, retry soon."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True, eq=False)
class _Keys:
    """A plan's Redis keys and the static part of its script arguments."""

    rates: tuple[bytes, ...]
    leases: tuple[bytes, ...]
    rate_args: tuple[tuple[bytes, ...], ...]  # a, b, d, tw, tr (encoded once: encoding args is costly)
    lease_args: tuple[bytes, ...]
    token_keys: tuple[bytes, ...]
    settle_args: tuple[bytes, ...]  # per token bucket: a, b, d, cap
    request_keys: tuple[bytes, ...]  # rps/rpm buckets (cancel refunds their cell)
    refund_args: tuple[bytes, ...]  # per request bucket: a, b, d


def _b(value: int | str) -> bytes:
    return str(value).encode()


def _keys(prefix: str, plan: Plan) -> _Keys:
    settle: list[bytes] = []
    for b in plan.rates:
        if b.is_tokens:
            settle += map(_b, (b.p // b.d, b.p % b.d, b.d, b.cap_us))
    return _Keys(
        rates=tuple(_b(f"{prefix}:{b.id}") for b in plan.rates),
        leases=tuple(_b(f"{prefix}:{b.id}") for b in plan.leases),
        rate_args=tuple(
            tuple(map(_b, (b.p // b.d, b.p % b.d, b.d, *divmod(b.tol_ticks, b.d)))) for b in plan.rates
        ),
        lease_args=tuple(_b(b.limit) for b in plan.leases),
        token_keys=tuple(_b(f"{prefix}:{b.id}") for b in plan.rates if b.is_tokens),
        settle_args=tuple(settle),
        request_keys=tuple(_b(f"{prefix}:{b.id}") for b in plan.rates if not b.is_tokens and not b.is_units),
        refund_args=tuple(
            arg
            for b in plan.rates
            if not b.is_tokens and not b.is_units
            for arg in map(_b, (b.p // b.d, b.p % b.d, b.d))
        ),
    )


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script call's keys and arguments. `clock` goes last: empty in production, the virtual time
    in tests (lua.PRELUDE); a script that embeds another's body passes `own_args` and the clock once."""

    keys: list[bytes | str]
    own_args: list[int | str | bytes]
    clock: tuple[int, ...]

    @property
    def args(self) -> list[int | str | bytes]:
        return [*self.own_args, *self.clock]


@dataclass(frozen=True, slots=True)
class AcquireCall:
    """A prepared acquire: the call, and what `finish_acquire` needs to read its reply."""

    script: ScriptCall
    demand: Demand
    plan: Plan
    lua_keys: _Keys
    rid: str


class RedisLimiter:
    SCRIPTS: ClassVar[tuple[str, str, str, str, str, str]] = (
        lua.ACQUIRE,
        lua.SETTLE,
        lua.RENEW,
        lua.REFUND,
        lua.RESTORE,
        lua.CHARGE,
    )

    def __init__(
        self,
        client: aioredis.Redis,
        rules: Iterable[Rule],
        *,
        prefix: str = "mf:rl",
        failure: FailurePolicy | None = None,
        lease_ttl_s: float = 300.0,
        pending_ttl_s: float = 3600.0,
        concurrency_retry_s: float = 1.0,
        retry_interval_s: float = 0.25,
        local_share: int = 1,
        owns_client: bool = False,
        recovery_grace_s: float | None = None,
    ) -> None:
        """`local_share`: replicas sharing the load, so the `local` fallback takes 1/N of each rate.
        `retry_interval_s`: how often a Redis marked down is probed (and the retry-after of a 503).
        `recovery_grace_s`: how long lease sets refuse new leases after Redis was found emptied
        (default: the lease TTL, within which every live lease is renewed and so put back)."""
        rules = list(rules)
        self._client = client
        self._owns_client = owns_client
        self._prefix = prefix
        self._failure = failure or FailurePolicy()
        self._lease_us = int(lease_ttl_s * 1_000_000)
        self._pending_ms = int(pending_ttl_s * 1000)
        self._grace_us = int((lease_ttl_s if recovery_grace_s is None else recovery_grace_s) * 1_000_000)
        self._concurrency_retry_us = int(concurrency_retry_s * 1_000_000)
        self._retry_interval_s = retry_interval_s
        self._local_share = local_share
        self._new_id = id_factory()
        self.link = RedisLink(client, probe_interval_s=retry_interval_s, what="rate limiter")
        self.link.on_up.append(self._pay_back)
        acquire, settle, renew, refund, restore, charge = self.SCRIPTS
        self._acquire = client.register_script(acquire)
        self._settle = client.register_script(settle)
        self._renew = client.register_script(renew)
        self._refund = client.register_script(refund)
        self._restore = client.register_script(restore)
        self._charge = client.register_script(charge)
        # This replica's live leases in Redis, per lease bucket id: the fallback counts them as its
        # own, so a replica's leases in Redis and in the fallback together stay within its slots.
        self._leases_in_redis: dict[str, int] = {}
        self._lease_holders: dict[str, Plan] = {}  # reservation id -> plan, while its leases are live
        # Per lease bucket id, the leases this replica held in Redis when Redis went away: what the
        # fallback may hold in the outage (None while Redis answers).
        self._slots: dict[str, int] | None = None
        # The fallback's reservations whose leases a heartbeat put back into an emptied Redis: their
        # settlement frees them there too.
        self._adopted: set[str] = set()
        self._fallback = LocalLimiter(
            _shared(rules, local_share),
            lease_ttl_s=lease_ttl_s,
            pending_ttl_s=pending_ttl_s,
            concurrency_retry_s=concurrency_retry_s,
            start_used_up=True,
            leases_elsewhere=self._leases_in_redis.get,
            lease_slots=lambda bucket_id: (self._slots or {}).get(bucket_id, 0),
        )
        self._book = RuleBook(rules)
        self._keys: dict[Plan, _Keys] = {}  # plans hash by identity; holding them keeps ids unique
        self._epoch_key = f"{prefix}:epoch"
        self._epoch = ""  # the Redis incarnation this replica has been deciding in ('' before the first)
        self._recovery: asyncio.Lock | None = None
        # Per rate bucket key: the TAT (in this process's monotonic µs) and tick denominator the last
        # admission here saw -- what this replica puts back into an emptied Redis.
        self._mirror: dict[bytes, tuple[int, int]] = {}
        self._mirror_sweep_at = 10_000
        # Per rate bucket key: cells the local fallback admitted (tokens reconciled), with the bucket's
        # a, b, d and debt cap -- charged to Redis when it answers again.
        self._owed: dict[bytes, list[int]] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        rules: Iterable[Rule],
        *,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        max_connections: int = 64,
        pool_timeout_s: float = 1.0,
        **options: Any,
    ) -> RedisLimiter:
        """A limiter with its own bounded connection pool and short read timeouts (`RedisLink`)."""
        client = RedisLink.pool_from_url(
            url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
        )
        return cls(client, rules, owns_client=True, **options)

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def update_rules(self, rules: Iterable[Rule]) -> None:
        rules = list(rules)
        self._book = RuleBook(rules)
        self._keys = {}
        self._fallback.update_rules(_shared(rules, self._local_share))

    async def aclose(self) -> None:
        await self.link.aclose()
        if self._owns_client:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()

    def _clock_args(self) -> tuple[int, ...]:
        """Extra script arguments; production passes none (its scripts read Redis TIME)."""
        return ()

    def _keys_for(self, plan: Plan) -> _Keys:
        keys = self._keys.get(plan)
        if keys is None:
            if len(self._keys) >= 65_536:
                self._keys.clear()
            keys = self._keys[plan] = _keys(self._prefix, plan)
        return keys

    async def acquire(self, demand: Demand) -> Decision:
        for _ in range(3):
            call = self.prepare_acquire(demand)
            if isinstance(call, Decision):
                return call
            try:
                reply = await self.link.call(self._acquire, call.script.keys, call.script.args)
                if reply[0] == -1:  # Redis was emptied: put back what this replica knows, then again
                    await self.recover(reply[1])
                    continue
            except (RedisError, OSError) as err:
                return self.acquire_failed(call, err)
            return self.finish_acquire(call, reply)
        assert isinstance(call, AcquireCall)
        return self.acquire_failed(call, RuntimeError("Redis was emptied again while catching up"))

    # The three steps of `acquire`, public so that one script call can carry a companion's work too
    # (gateway/shared_admission.py: the quotas).
    def prepare_acquire(self, demand: Demand) -> AcquireCall | Decision:
        """The script's keys and arguments, or the decision when Redis need not (or cannot) be asked."""
        plan = self._book.plan(demand)
        if plan.empty:
            return Decision(
                True, Reservation("", plan, demand.tokens, "none", demand.units), None, None, None
            )
        if not self.link.up:
            return self._degraded(demand, plan, "Redis is down")
        keys = self._keys_for(plan)
        rid = self._new_id() if plan.needs_id else ""
        too_large = plan.too_large(demand.tokens)
        tokens = min(demand.tokens, MAX_TOKENS)
        args: list[int | str | bytes] = [
            len(keys.rates),
            len(keys.leases),
            rid,
            self._lease_us,
            self._pending_ms,
            1 if too_large else 0,
        ]
        for bucket, static in zip(plan.rates, keys.rate_args, strict=True):
            args.append(bucket.cost(tokens, demand.units))
            args.extend(static)
        args.extend(keys.lease_args)
        args += (self._epoch, self._grace_us)
        script_keys: list[bytes | str] = [*keys.rates, *keys.leases]
        if plan.has_tokens:
            script_keys.append(f"{self._prefix}:res:{rid}")
        script_keys.append(self._epoch_key)
        return AcquireCall(ScriptCall(script_keys, args, self._clock_args()), demand, plan, keys, rid)

    def acquire_failed(self, call: AcquireCall, err: BaseException) -> Decision:
        log.warning("rate limiter: Redis acquire failed: %s", err)
        return self._degraded(call.demand, call.plan, str(err))

    async def recover(self, epoch: bytes | str) -> None:
        """Redis was emptied since this replica last decided in it: put back the bucket states this
        replica saw last (each at least as far as it saw it), then decide in the new epoch. Concurrent
        callers share one recovery."""
        epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        if self._recovery is None:
            self._recovery = asyncio.Lock()
        async with self._recovery:
            if self._epoch == epoch:
                return
            now = monotonic_us()
            ahead = [(key, tat - now, d) for key, (tat, d) in self._mirror.items() if tat > now]
            for start in range(0, len(ahead), 500):
                chunk = ahead[start : start + 500]
                args: list[int] = [x for _, us, d in chunk for x in (us, d)]
                await self.link.call(
                    self._restore, [key for key, _, _ in chunk], [*args, *self._clock_args()]
                )
            log.warning(
                "rate limiter: Redis was emptied (epoch %s); put back %d bucket states", epoch, len(ahead)
            )
            self._epoch = epoch

    def finish_acquire(self, call: AcquireCall, reply: list[int]) -> Decision:
        """The decision from the script's reply. A reply of 2 (checked only, see lua.ACQUIRE_BODY) is
        the decision the request would have had: admitted, holding nothing (no reservation)."""
        plan = call.plan
        n = len(call.lua_keys.rates)
        debts = [reply[1 + 2 * i] * b.d + reply[2 + 2 * i] for i, b in enumerate(plan.rates)]
        base = 1 + 2 * n
        leases: list[LeaseState] = [
            (reply[base + 2 * i], reply[base + 2 * i + 1]) for i in range(len(call.lua_keys.leases))
        ]
        if not self._epoch:
            epoch = reply[base + 2 * len(call.lua_keys.leases)]
            self._epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        admitted = reply[0] in (1, 2)
        demand = call.demand
        reservation = (
            Reservation(call.rid, plan, demand.tokens, "redis", demand.units) if reply[0] == 1 else None
        )
        if reply[0] == 1 and plan.rates:
            self._remember(call, debts)
        if reply[0] == 1 and plan.leases:
            self._lease_holders[call.rid] = plan
            for bucket in plan.leases:
                self._leases_in_redis[bucket.id] = self._leases_in_redis.get(bucket.id, 0) + 1
        return conclude(
            plan,
            demand.tokens,
            debts,
            leases,
            admitted,
            reservation,
            self._concurrency_retry_us,
            demand.units,
        )

    def _remember(self, call: AcquireCall, debts: list[int]) -> None:
        """Mirror the TAT each rate bucket has after this admission (cheap: a dict write per bucket)."""
        now = monotonic_us()
        tokens = min(call.demand.tokens, MAX_TOKENS)
        mirror = self._mirror
        for key, bucket, debt in zip(call.lua_keys.rates, call.plan.rates, debts, strict=True):
            ticks = debt + bucket.cost(tokens, call.demand.units) * bucket.p
            mirror[key] = (now - (-ticks // bucket.d), bucket.d)
        if len(mirror) >= self._mirror_sweep_at:
            self._mirror = {k: v for k, v in mirror.items() if v[0] > now}
            self._mirror_sweep_at = max(10_000, 2 * len(self._mirror))

    def _degraded(self, demand: Demand, plan: Plan, cause: str) -> Decision:
        policy = self._failure.for_plan(plan)
        if policy is OnFailure.FAIL_CLOSED:
            raise LimiterUnavailable(f"rate limiter unavailable: {cause}", self._retry_interval_s)
        if policy is OnFailure.LOCAL:
            if self._slots is None:
                self._slots = dict(self._leases_in_redis)
            decision = self._fallback.try_acquire(demand)
            if decision.admitted:
                tokens = min(demand.tokens, MAX_TOKENS)
                for bucket in plan.rates:
                    self._owe(bucket, bucket.cost(tokens, demand.units))
            return replace(decision, degraded=True)
        reservation = Reservation("", plan, demand.tokens, "none", demand.units)
        return Decision(True, reservation, None, None, None, degraded=True)

    def _owe(self, bucket: Bucket, cells: int) -> None:
        """Note cells the fallback took (negative: gave back) for `_pay_back`."""
        key = _b(f"{self._prefix}:{bucket.id}")
        owed = self._owed.get(key)
        if owed is None:
            owed = self._owed[key] = [0, bucket.p // bucket.d, bucket.p % bucket.d, bucket.d, bucket.cap_us]
        owed[0] += cells

    async def _pay_back(self) -> None:
        """Redis answers again: charge it what the fallback admitted meanwhile, so the shared buckets
        do not hand out the outage's refill a second time, and start the fallback afresh (used up) for
        the next outage. Raises if Redis fails again (the debt is kept for the next time)."""
        owed = [(key, entry) for key, entry in self._owed.items() if entry[0] > 0]
        for start in range(0, len(owed), 500):
            chunk = owed[start : start + 500]
            args: list[int] = []
            for _, (cells, a, b, d, cap) in chunk:
                args += (min(cells, cap // max(a, 1) + 1), a, b, d, cap)
            await self._charge(keys=[key for key, _ in chunk], args=[*args, *self._clock_args()])
        if owed:
            log.warning(
                "rate limiter: charged Redis the local fallback's admissions in %d buckets", len(owed)
            )
        self._owed.clear()
        self._fallback.forget_rates()
        self._slots = None

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Charge the real token usage instead of the reservation and free the leases, once.

        Never raises: it runs when the response is already sent. If Redis is unreachable, the estimate
        stays charged and the leases expire after their TTL.
        """
        if reservation.backend == "local":
            if reservation.id in self._adopted:
                self._adopted.discard(reservation.id)
                await self._free_adopted(reservation)
            applied = self._fallback.settle(reservation, actual_tokens)
            if applied and reservation.plan.has_tokens:
                delta = min(actual_tokens, MAX_TOKENS) - reservation.tokens
                for bucket in reservation.plan.token_rates:
                    self._owe(bucket, delta)
            return applied
        call = self.prepare_settle(reservation, actual_tokens)
        if call is None:
            return False
        try:
            freed = await self.link.call(self._settle, call.keys, call.args)
        except (RedisError, OSError) as err:
            self.settle_failed(reservation, err)
            return False
        return bool(freed)

    def prepare_settle(self, reservation: Reservation, actual_tokens: int) -> ScriptCall | None:
        """The settle script's keys and arguments; None when the reservation holds nothing in Redis."""
        if reservation.backend != "redis" or not reservation.id:
            return None
        if self._lease_holders.pop(reservation.id, None) is not None:
            for bucket in reservation.plan.leases:
                left = self._leases_in_redis.get(bucket.id, 0) - 1
                if left > 0:
                    self._leases_in_redis[bucket.id] = left
                else:
                    self._leases_in_redis.pop(bucket.id, None)
        keys = self._keys_for(reservation.plan)
        script_keys: list[bytes | str] = [*keys.token_keys, *keys.leases]
        if reservation.plan.has_tokens:
            script_keys.append(f"{self._prefix}:res:{reservation.id}")
        delta = min(actual_tokens, MAX_TOKENS) - reservation.tokens
        args: list[int | str | bytes] = [len(keys.token_keys), len(keys.leases), reservation.id, delta]
        args += keys.settle_args
        return ScriptCall(script_keys, args, self._clock_args())

    @staticmethod
    def settle_failed(reservation: Reservation, err: BaseException) -> None:
        log.warning("rate limiter: Redis settle of %s failed: %s", reservation.id, err)

    async def release(self, reservation: Reservation) -> bool:
        """The request ended without usage (upstream error, cancelled): refund every reserved token."""
        return await self.reconcile(reservation, 0)

    async def cancel(self, reservation: Reservation) -> None:
        """Undo an admission that never ran (a sibling demand was refused): release its leases and
        reserved tokens like `release`, and give back its request cells. Call it once, instead of
        `release`. Never raises; if Redis is unreachable the cells refill with time."""
        if reservation.backend == "local":
            self._fallback.try_cancel(reservation)
            tokens = min(reservation.tokens, MAX_TOKENS)
            for bucket in reservation.plan.rates:
                self._owe(bucket, -bucket.cost(tokens, reservation.units))
            return
        if reservation.backend != "redis":
            return
        if reservation.id:
            await self.reconcile(reservation, 0)
        keys = self._keys_for(reservation.plan)
        refund_keys, refund_args = list(keys.request_keys), list(keys.refund_args)
        if reservation.units:  # units buckets give back the request's units: T × units each
            for key, bucket in zip(keys.rates, reservation.plan.rates, strict=True):
                if bucket.is_units:
                    a, b = divmod(bucket.p * reservation.units, bucket.d)
                    refund_keys.append(key)
                    refund_args += (_b(a), _b(b), _b(bucket.d))
        if not refund_keys:
            return
        args: list[int | str | bytes] = [*refund_args, *self._clock_args()]
        try:
            await self.link.call(self._refund, refund_keys, args)
        except (RedisError, OSError) as err:
            log.warning("rate limiter: Redis refund failed: %s", err)

    async def renew(self, reservation: Reservation) -> bool:
        """Keep a request's leases alive: the gateway's heartbeat calls it for every request in
        flight, several times per lease TTL. After Redis was emptied, it puts the lease back."""
        if reservation.backend == "local":
            renewed = self._fallback.try_renew(reservation)
            if renewed and reservation.plan.leases and self.link.up:
                await self._renew_adopted(reservation)
            return renewed
        if reservation.backend != "redis" or not reservation.id or not self.link.up:
            return True  # it holds nothing that could expire (or Redis is down: nothing to renew in)
        keys = self._keys_for(reservation.plan)
        script_keys: list[bytes | str] = list(keys.leases)
        if reservation.plan.has_tokens:
            script_keys.append(f"{self._prefix}:res:{reservation.id}")
        script_keys.append(self._epoch_key)
        args: list[int | str] = [len(keys.leases), reservation.id, self._lease_us, self._pending_ms]
        args += (self._epoch, self._grace_us, *self._clock_args())
        try:
            renewed, epoch = await self.link.call(self._renew, script_keys, args)
            if self._epoch and epoch.decode() != self._epoch:
                await self.recover(epoch)
        except (RedisError, OSError) as err:
            log.warning("rate limiter: Redis renew of %s failed: %s", reservation.id, err)
            return False
        return bool(renewed)

    async def _renew_adopted(self, reservation: Reservation) -> None:
        """A lease the fallback gave, renewed in Redis as well: while an emptied Redis calms down this
        puts it back (the renew script does so for any live lease), so it counts there once the calm
        is over; afterwards it keeps it alive. Outside a calm Redis never had it and the script only
        says so."""
        keys = self._keys_for(reservation.plan)
        args: list[int | str] = [len(keys.leases), reservation.id, self._lease_us, self._pending_ms]
        args += (self._epoch, self._grace_us, *self._clock_args())
        try:
            renewed, _ = await self.link.call(self._renew, [*keys.leases, self._epoch_key], args)
        except (RedisError, OSError) as err:
            log.warning("rate limiter: Redis renew of %s failed: %s", reservation.id, err)
            return
        if renewed:
            self._adopted.add(reservation.id)

    async def _free_adopted(self, reservation: Reservation) -> None:
        """Free in Redis the leases of a fallback reservation that a heartbeat put back there."""
        keys = self._keys_for(reservation.plan)
        args: list[int | str | bytes] = [0, len(keys.leases), reservation.id, 0, *self._clock_args()]
        try:
            await self.link.call(self._settle, list(keys.leases), args)
        except (RedisError, OSError) as err:
            self.settle_failed(reservation, err)


def _shared(rules: list[Rule], share: int) -> list[Rule]:
    """Each of `share` replicas enforces 1/share of every limit (and burst) when falling back to local
    state: N such buckets, each starting used up, never admit more together than the shared one."""
    if share <= 1:
        return rules
    return [
        replace(
            rule,
            limit=max(1, rule.limit // share),
            burst=None if rule.burst is None else max(1, rule.burst // share),
        )
        for rule in rules
    ]
