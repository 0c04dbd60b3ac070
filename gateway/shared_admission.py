"""Limits and quotas of a request in one Redis call before it, and one after.

The limiter (`RedisLimiter`) and the quotas (`RedisQuotas`) each work alone, one script call apiece.
A request with both would pay two round trips to be admitted and two to be settled; on this 2-core
machine a round trip through redis-py costs 100-170 µs of CPU, the largest part of the gateway's own
work. `SharedAdmission` runs both bodies in one script (lua.ADMIT_WITH_QUOTAS): the quotas are
checked first, and when one refuses the limits are only checked, so a refused request takes nothing
anywhere and needs no undo call. Settlement is one call too (lua.SETTLE_WITH_QUOTAS).

Everything else -- a limiter that needs no Redis for this request, Redis marked down, the failure
policies -- is left to the two parts, so their semantics stay the ones their own tests pin down.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from redis.exceptions import RedisError

from gateway.limits import Decision, Demand, RedisLimiter, Reservation, lua
from gateway.quotas import QuotaHold, QuotaRefusal, QuotaSubject, RedisQuotas


class SharedAdmission:
    def __init__(
        self,
        limiter: RedisLimiter,
        quotas: RedisQuotas,
        scripts: tuple[str, str] = (lua.ADMIT_WITH_QUOTAS, lua.SETTLE_WITH_QUOTAS),
    ) -> None:
        self.limiter = limiter
        self.quotas = quotas
        self._admit = limiter.client.register_script(scripts[0])
        self._settle = limiter.client.register_script(scripts[1])

    async def admit(
        self, demand: Demand, subjects: Sequence[QuotaSubject], tokens: int, now: datetime
    ) -> tuple[Decision, QuotaHold | QuotaRefusal | None]:
        """The limiter's decision and, when it was taken in the same call, the quota's answer (None:
        the caller still has to reserve the quota, e.g. the limiter decided without Redis). Raises
        `LimiterUnavailable` like `RedisLimiter.acquire`."""
        for _ in range(3):
            call = self.limiter.prepare_acquire(demand)
            if isinstance(call, Decision) or not subjects or not self.quotas.available():
                decision = call if isinstance(call, Decision) else await self.limiter.acquire(demand)
                return decision, None
            quota_keys, quota_args = self.quotas.reserve_call(subjects, tokens, now)
            script = call.script
            own = script.own_args
            try:
                reply = await self.limiter.link.call(
                    self._admit,
                    [*script.keys, *quota_keys],
                    [len(script.keys), len(own), *own, *quota_args, *script.clock],
                )
                if reply[0] == -1:  # Redis was emptied: the limiter puts back what it knows first
                    await self.limiter.recover(reply[1])
                    continue
            except (RedisError, OSError) as exc:
                self.quotas.mark_down(exc)
                return self.limiter.acquire_failed(call, exc), None
            break
        else:
            return await self.limiter.acquire(demand), None
        refused, used = int(reply[-2]), int(reply[-1])
        decision = self.limiter.finish_acquire(call, reply[:-2])
        if not decision.admitted:
            return decision, None  # the limits refused first; nothing was taken
        if refused:
            return decision, self.quotas.refusal(subjects[refused - 1], used, tokens, now)
        return decision, self.quotas.held(subjects, tokens)

    async def settle(self, reservation: Reservation | None, hold: QuotaHold, actual_tokens: int) -> None:
        """Settle both, once each; never raises (the answer is already sent)."""
        limiter_call = (
            self.limiter.prepare_settle(reservation, actual_tokens)
            if reservation is not None and reservation.backend == "redis"
            else None
        )
        if limiter_call is None or hold.backend != "redis" or hold.settled:
            if reservation is not None and reservation.id:
                await self.limiter.reconcile(reservation, actual_tokens)
            await self.quotas.settle(hold, actual_tokens)
            return
        quota_call = self.quotas.settle_call(hold, actual_tokens)
        quota_keys, delta = quota_call if quota_call is not None else ([], 0)
        own = limiter_call.own_args
        try:
            await self.limiter.link.call(
                self._settle,
                [*limiter_call.keys, *quota_keys],
                [len(limiter_call.keys), len(own), *own, delta, *limiter_call.clock],
            )
        except (RedisError, OSError) as exc:
            assert reservation is not None
            self.limiter.settle_failed(reservation, exc)
            self.quotas.settle_failed(exc)
