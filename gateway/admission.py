"""Admission: every applicable rate limit and both token quotas, all or nothing, before any upstream.

`Admitter.admit()` returns an `Admission` (what the request holds, settled exactly once after it ran,
with the real token count) or a `Refusal` (a limit or a quota said no, or the limiter is unreachable
and the failure policy says to refuse). With both limits and quotas in Redis it is one script call
(`SharedAdmission`); otherwise the limiter and then the quotas, the limiter's cells given back when a
quota refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway import metrics
from gateway.limits import MAX_TOKENS, Decision, Demand, Limiter, LimiterUnavailable, build_limiter
from gateway.limits.rules import TOKEN_UNITS, Rule
from gateway.quotas import NO_HOLD, Counter, LocalQuotas, QuotaHold, QuotaRefusal, Quotas, QuotaSubject
from gateway.refusal import Refusal, Why
from gateway.settings import GatewaySettings
from gateway.shared_admission import SharedAdmission
from gateway.snapshot import KeyEntry, ModelEntry, Snapshot
from gateway.tokens import estimate_prompt_tokens
from store.periods import period_bounds

# Endpoints whose answer is generated tokens: their reservation adds the output cap.
GENERATING = frozenset({"chat.completions", "completions", "responses", "messages"})


@dataclass(slots=True, eq=False)
class Admission:
    """What an admitted request holds: the limiter's reservation and the quota hold. Settle once."""

    admitter: Admitter
    decision: Decision
    hold: QuotaHold
    charges: tuple[Counter, ...]
    tokens: int
    settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return self.decision.headers()

    async def cancel(self) -> None:
        """Undo the admission of a request that never ran (a sibling was refused): leases, reserved
        tokens and request cells all come back. Counts as the settlement."""
        if self.settled:
            return
        self.settled = True
        self.admitter.live.discard(self)
        if self.decision.reservation is not None:
            await self.admitter.limiter.cancel(self.decision.reservation)
        if self.hold is not NO_HOLD:
            await self.admitter.quotas.settle(self.hold, 0)

    async def settle(self, actual_tokens: int) -> None:
        """Replace every reservation with the real usage (0: release). Only the first call counts."""
        if self.settled:
            return
        self.settled = True
        self.admitter.live.discard(self)
        reservation = self.decision.reservation
        shared = self.admitter.shared
        if shared is not None and self.hold is not NO_HOLD:
            await shared.settle(reservation, self.hold, actual_tokens)
            return
        if reservation is not None and reservation.id:
            await self.admitter.limiter.reconcile(reservation, actual_tokens)
        if self.hold is not NO_HOLD:
            await self.admitter.quotas.settle(self.hold, actual_tokens)


class Admitter:
    """The process's limiter and quota stores (in process, or shared through Redis)."""

    def __init__(self, settings: GatewaySettings, limiter: Limiter | None = None) -> None:
        self.settings = settings
        self.limiter: Limiter = limiter or build_limiter([])
        self.local_quotas = LocalQuotas()
        self.quotas = Quotas(self.local_quotas)
        self.shared: SharedAdmission | None = None  # limits and quotas in one Redis call (both in Redis)
        self.has_token_rules = False
        self.live: set[Admission] = set()  # admitted, not yet settled: what the heartbeat renews

    async def heartbeat(self) -> None:
        """Renew the leases and token reservations of every request in flight, so that they can have
        a short lifetime: a replica that dies stops renewing, and its leases free within one lifetime.
        After Redis was emptied, this is also what puts the live leases back."""
        held = [a.decision.reservation for a in list(self.live)]
        reservations = [r for r in held if r is not None and r.id]
        for start in range(0, len(reservations), 64):
            chunk = reservations[start : start + 64]
            await asyncio.gather(*(self.limiter.renew(r) for r in chunk))

    def update_rules(self, rules: tuple[Rule, ...]) -> None:
        self.limiter.update_rules(rules)
        self.has_token_rules = any(r.unit in TOKEN_UNITS for r in rules)

    def reservation(self, snapshot: Snapshot, key: KeyEntry, body: Mapping[str, Any], endpoint: str) -> int:
        """Tokens to reserve: prompt estimate + the output cap (or the default). Skipped (0) when no
        token limit and no quota could use it: estimating a long prompt is the costliest step."""
        workspace = snapshot.workspaces.get(key.workspace)
        if (
            not self.has_token_rules
            and key.token_quota is None
            and (workspace is None or workspace.token_quota is None)
        ):
            return 0
        prompt = estimate_prompt_tokens(body)
        if endpoint not in GENERATING:  # embeddings, images, rerank, speech, transcriptions: no output tokens
            return prompt
        output = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
            output = self.settings.gateway_default_max_tokens
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1
        return prompt + output * choices

    @staticmethod
    def charges(snapshot: Snapshot, key: KeyEntry, now: datetime) -> tuple[Counter, ...]:
        """The quota counters a request's usage is charged to: its key's and its workspace's."""
        key_period, _ = period_bounds(key.quota_refresh, now)
        workspace = snapshot.workspaces.get(key.workspace)
        out: list[Counter] = [("api_key", key.public_id, key_period)]
        if workspace is not None:
            out.append(("workspace", workspace.slug, period_bounds(workspace.quota_refresh, now)[0]))
        return tuple(out)

    @staticmethod
    def quota_subjects(snapshot: Snapshot, key: KeyEntry, now: datetime) -> list[QuotaSubject]:
        subjects: list[QuotaSubject] = []
        if key.token_quota is not None:
            start, end = period_bounds(key.quota_refresh, now)
            subjects.append(QuotaSubject("api_key", key.public_id, key.token_quota, start, end))
        workspace = snapshot.workspaces.get(key.workspace)
        if workspace is not None and workspace.token_quota is not None:
            start, end = period_bounds(workspace.quota_refresh, now)
            subjects.append(QuotaSubject("workspace", workspace.slug, workspace.token_quota, start, end))
        return subjects

    async def admit(
        self,
        snapshot: Snapshot,
        key: KeyEntry,
        model: ModelEntry,
        tokens: int,
        now: datetime,
        units: int = 0,
    ) -> Admission | Refusal:
        """Every applicable rate limit and both quotas, all or nothing (a limit refusal is reported
        first). `units`: the request's modality units (gateway/units.py), charged by upm/upd rules."""
        demand = Demand(model.public_id, key.workspace, key.public_id, tokens, min(units, MAX_TOKENS))
        subjects = self.quota_subjects(snapshot, key, now)
        hold: QuotaHold | QuotaRefusal | None = None
        try:
            if self.shared is not None and subjects:
                decision, hold = await self.shared.admit(demand, subjects, tokens, now)
            else:
                decision = await self.limiter.acquire(demand)
        except LimiterUnavailable as exc:
            return _unavailable(str(exc), exc.retry_after)
        if not decision.admitted:
            refusal = decision.refusal
            assert refusal is not None
            metrics.observe_refusal(refusal.scope.value, refusal.unit.value)
            return Refusal(
                Why.RATE_LIMITED,
                refusal.message(model.public_id),
                headers=decision.headers(),
                error_type=refusal.error_type,
            )
        if hold is None:
            hold = NO_HOLD
            if subjects:
                try:
                    hold = await self.quotas.reserve(subjects, tokens, now)
                except LimiterUnavailable as exc:
                    await self._release(decision)
                    return _unavailable(str(exc), exc.retry_after)
        if isinstance(hold, QuotaRefusal):
            await self._release(decision)
            metrics.observe_refusal(hold.kind, "quota")
            return Refusal(
                Why.QUOTA_EXCEEDED, hold.message(), headers={**decision.headers(), **hold.headers()}
            )
        admission = Admission(self, decision, hold, self.charges(snapshot, key, now), tokens)
        self.live.add(admission)
        return admission

    async def _release(self, decision: Decision) -> None:
        """A quota refused what the limits admitted: the request never happened, so its request
        cells come back too (not only reserved tokens and leases)."""
        if decision.reservation is not None:
            await self.limiter.cancel(decision.reservation)


def _unavailable(message: str, retry_after: float) -> Refusal:
    return Refusal(
        Why.LIMITER_UNAVAILABLE,
        f"The gateway cannot check limits right now ({message}); retry shortly.",
        retry_after=retry_after,
    )
