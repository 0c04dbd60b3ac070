"""The upstream side: routers per model, failover across targets, and relaying an upstream's stream.

`Relay.connect()` tries the router's candidates in order until one answers with a non-failure status,
failing over on transport errors, timeouts and failure statuses (408, 429, 5xx) before any byte went to
the client; every attempt feeds the target's circuit breaker. `pump()` relays an SSE stream through the
`StreamMeter` to a sink.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway import metrics
from gateway.breaker import BreakerBoard, BreakerConfig, is_failure_status, parse_retry_after
from gateway.metering import Outcome, StreamMeter
from gateway.refusal import Refusal, Why
from gateway.routing import Attempt, Router, Target
from gateway.snapshot import ModelEntry, TargetSpec
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout


@dataclass(slots=True, eq=False)
class Connected:
    attempt: Attempt
    spec: TargetSpec
    response: UpstreamResponse
    started: float  # perf_counter when the request arrived


class Relay:
    def __init__(self, breaker_config: BreakerConfig | None, region: str | None, max_attempts: int) -> None:
        self.breakers = BreakerBoard(breaker_config or BreakerConfig())
        self.routers: dict[str, Router] = {}
        self.targets: dict[str, Target] = {}  # by name, reused across reloads (in-flight counts)
        self.specs: dict[str, TargetSpec] = {}
        self.region = region
        self.max_attempts = max_attempts
        self.upstream: UpstreamClient | None = None

    def apply(self, models: dict[str, ModelEntry]) -> None:
        """Routers for a new snapshot's models (targets keep their identity across reloads)."""
        for key, entry in models.items():
            targets = [self._target(key, spec) for spec in entry.targets]
            router = self.routers.get(key)
            if router is None:
                self.routers[key] = Router(targets, entry.strategy, breakers=self.breakers)
            else:
                router.strategy = entry.strategy
                router.set_targets(targets)
            for spec in entry.targets:
                self.specs[spec.name] = spec
        for gone in set(self.routers) - set(models):
            del self.routers[gone]
        live = {f"{key}\0{spec.name}" for key, entry in models.items() for spec in entry.targets}
        for gone in set(self.targets) - live:  # replicas come and go: forget what left
            del self.targets[gone]

    def _target(self, router: str, spec: TargetSpec) -> Target:
        """A router's target for a spec; the same object across reloads, so in-flight counts and the
        weighted round robin's state stay with it. Two routers may share an endpoint (an offering and
        the workspace serving it was made from) with their own weights; the breaker, keyed by the
        target's name, is the endpoint's and so shared."""
        target = self.targets.get(f"{router}\0{spec.name}")
        if target is None:
            target = self.targets[f"{router}\0{spec.name}"] = Target(spec.name)
        target.url, target.weight, target.region = spec.url, spec.weight, spec.region
        target.priority, target.healthy = spec.priority, spec.healthy
        return target

    async def connect(
        self,
        model: ModelEntry,
        path: str,
        body_for: Callable[[TargetSpec], bytes],
        request_id: str,
        started: float,
        content_type: str = "application/json",
    ) -> Connected | Refusal:
        """Try the router's candidates in order until one answers with a non-failure status."""
        upstream = self.upstream
        assert upstream is not None
        router = self.routers.get(model.route_key)
        if router is None:
            return Refusal(Why.NO_UPSTREAM, f"model {model.public_id} has no upstream")
        if model.waiting and not any(t.weight > 0 for t in router.targets):
            return not_ready(model)
        failure: Refusal | None = None
        for tries, attempt in enumerate(router.attempts(self.region), start=1):
            spec = self.specs[attempt.target.name]
            headers = [("content-type", content_type), ("x-request-id", request_id), *spec.headers]
            try:
                response = await upstream.post(spec.url + path, body_for(spec), headers)
            except UpstreamTimeout:
                attempt.failed()
                attempt.close()
                metrics.child(metrics.UPSTREAM_ATTEMPTS, spec.name, "timeout").inc()
                failure = Refusal(Why.UPSTREAM_TIMEOUT, "The upstream did not answer in time.", target=spec)
            except UpstreamError as exc:
                attempt.failed()
                attempt.close()
                metrics.child(metrics.UPSTREAM_ATTEMPTS, spec.name, "transport_error").inc()
                message = f"The upstream could not be reached ({exc.cause})."
                failure = Refusal(Why.UPSTREAM_UNREACHABLE, message, target=spec)
            except BaseException:
                attempt.close()
                raise
            else:
                status = response.status_code
                if not is_failure_status(status):
                    attempt.succeeded()
                    metrics.child(metrics.UPSTREAM_ATTEMPTS, spec.name, "ok").inc()
                    return Connected(attempt, spec, response, started)
                retry_after = parse_retry_after(response.headers)
                attempt.failed(retry_after)
                try:
                    detail = await _error_message(response)
                finally:
                    response.close()  # the connection goes back to the pool (or is closed)
                    attempt.close()
                metrics.child(metrics.UPSTREAM_ATTEMPTS, spec.name, "failure").inc()
                failure = _failure(status, detail, retry_after, spec)
            if tries >= self.max_attempts:
                break
        if failure is not None:
            return failure
        waits = [self.breakers[t.name].retry_in() for t in router.targets if t.weight > 0]
        retry = min((w for w in waits if w > 0), default=None)
        return Refusal(
            Why.NO_UPSTREAM, f"No upstream of model {model.public_id} is available now.", retry_after=retry
        )

    @staticmethod
    async def pump(
        connected: Connected, meter: StreamMeter, emit: Callable[[bytes], Awaitable[None]]
    ) -> Outcome | None:
        """Relay the upstream stream through the meter to `emit`. Returns the outcome when the caller
        cannot read it from the stream (an upstream that broke off); raises on cancellation."""
        try:
            async for piece in connected.response.aiter_raw():
                forward = meter.feed(piece)
                if forward:
                    await emit(forward)
            tail = meter.close()
            if tail:
                await emit(tail)
        except UpstreamError:
            return Outcome.UPSTREAM_ERROR
        return None

    @staticmethod
    def close(connected: Connected) -> None:
        """Close the upstream response and the attempt (synchronous: safe inside a cancelled task)."""
        connected.attempt.close()
        connected.response.close()


def not_ready(model: ModelEntry) -> Refusal:
    """Nothing of the model is ready: say what each placement is doing, and since when."""
    now = datetime.now(UTC)
    said = "; ".join(w.describe(now) for w in model.waiting)
    return Refusal(Why.NOT_READY, f"The model `{model.public_id}` is not ready: {said}.", retry_after=5)


def _failure(status: int, detail: str, retry_after: float | None, spec: TargetSpec) -> Refusal:
    if status in (429, 503):
        message = f"The upstream is overloaded: {detail}"
        return Refusal(Why.UPSTREAM_OVERLOADED, message, retry_after=retry_after, target=spec)
    if status in (408, 504):
        return Refusal(Why.UPSTREAM_TIMEOUT, f"The upstream timed out: {detail}", target=spec)
    return Refusal(Why.UPSTREAM_ERROR, f"The upstream failed: {detail}", target=spec)


async def _error_message(response: UpstreamResponse) -> str:
    """The upstream's error message, from a small body; never fails."""
    try:
        raw = await response.aread()
    except UpstreamError:
        return f"status {response.status_code}"
    try:
        error = json.loads(raw).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return f"status {response.status_code}: {str(message)[:300]}"
    except (ValueError, AttributeError):
        pass
    return f"status {response.status_code}"
