"""The answers that outlive the handler: a complete answer settled after its last byte, and a relayed
event stream metered and settled in `finally` whatever happens."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.admission import Admission
from gateway.core import Gateway
from gateway.errors import SSE_HEADERS
from gateway.metering import Outcome, PreparedRequest, StreamMeter
from gateway.records import Sample
from gateway.relay import Connected
from gateway.translation import StreamTranslator
from gateway.units import streamed


class SettledAfter(Response):
    """A complete answer whose reservation is settled after its last byte went out, so the limiter's
    and the quota store's round trips are not part of the client's latency."""

    def __init__(self, inner: Response, admission: Admission, used_tokens: int) -> None:
        self.inner = inner
        self.admission = admission
        self.used_tokens = used_tokens
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        except BaseException:  # cancelled or failed while sending: settle all the same, shielded
            with anyio.CancelScope(shield=True):
                await self.admission.settle(self.used_tokens)
            raise
        # Sent: nothing cancels a finished request's task but a shutdown, and on the limiter's pipe the
        # settling script is written before the call first suspends, so the shield (anyio's cancel
        # scope, on every request otherwise) is only paid for where it is needed.
        await self.admission.settle(self.used_tokens)


class RelayResponse(Response):
    """A streamed answer: headers (rate limits included) first, then the upstream's events as they come.

    Everything after the first byte is settled in `finally`, whatever happens: the record is made
    synchronously first (a cancelled task raises again at every await), then the upstream is closed
    and the reservation settled under a shield. A disconnect is noticed by listening for
    `http.disconnect` next to the relay, which then stops reading the upstream.
    """

    def __init__(
        self,
        gateway: Gateway,
        connected: Connected,
        admission: Admission,
        sample: Sample,
        prepared: PreparedRequest,
        headers: Mapping[str, str],
        translator: StreamTranslator | None = None,
    ) -> None:
        self.translator = translator  # the chat events become another API's (gateway/translation.py)
        self.gateway = gateway
        self.connected = connected
        self.admission = admission
        self.sample = sample
        self.prepared = prepared
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.raw_headers += SSE_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway, connected = self.gateway, self.connected
        meter = StreamMeter.for_request(self.prepared, started_at=connected.started, clock=time.perf_counter)
        bill = gateway.settings.gateway_bill_prompt_without_output
        outcome: Outcome | None = None
        disconnected = False
        finished = False  # the last byte is out: a disconnect from now on is the normal end

        translator = self.translator

        async def emit(data: bytes) -> None:
            if translator is not None:
                data = translator.feed(data)
                if not data:
                    return
            await send({"type": "http.response.body", "body": data, "more_body": True})

        if gateway.inflight is not None:
            gateway.inflight.watch(self.sample.request_id, meter)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message: Message = await receive()
                        if message["type"] == "http.disconnect":
                            if not finished:
                                disconnected = True
                                group.cancel_scope.cancel()
                            return

                group.start_soon(watch)
                outcome = await gateway.relay.pump(connected, meter, emit)
                if translator is not None:  # its closing events carry the usage
                    so_far = meter.finish(outcome, bill_prompt_without_output=bill)
                    failed = (
                        None if so_far.outcome is Outcome.COMPLETED else meter.error or so_far.outcome.value
                    )
                    await send(
                        {
                            "type": "http.response.body",
                            "body": translator.close(so_far.usage, failed),
                            "more_body": True,
                        }
                    )
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            disconnected = not finished
        except BaseException:
            disconnected = not finished  # cancelled from outside: the server is stopping or the client left
            raise
        finally:
            if gateway.inflight is not None:
                gateway.inflight.unwatch(self.sample.request_id)
            if disconnected:
                outcome = after_disconnect(meter)
            metered = meter.finish(
                outcome, bill_prompt_without_output=gateway.settings.gateway_bill_prompt_without_output
            )
            sample = self.sample
            if sample.modality != "text":  # images completed, seconds transcribed
                units = streamed(sample.modality, meter.items, meter.usage_seen, sample.units_asked)
                metered = replace(metered, units=units)
            sample.metered = metered
            if metered.outcome is not Outcome.COMPLETED:
                sample.error_type = metered.outcome.value
            usage = gateway.recorder.record(sample)
            connected.attempt.close()
            metrics.IN_FLIGHT.dec()
            with anyio.CancelScope(shield=True):
                connected.response.close()
                await self.admission.settle(usage.total_tokens)


def after_disconnect(meter: StreamMeter) -> Outcome | None:
    """The outcome of a stream whose client went away: if the upstream had failed first (the client may
    leave because of it) an upstream error; if the stream was already complete (`[DONE]` relayed, the
    client closed before our last bookkeeping) read it from the stream; otherwise a disconnect."""
    if meter.error is not None:
        return Outcome.UPSTREAM_ERROR
    if meter.done:
        return None
    return Outcome.CLIENT_DISCONNECTED
