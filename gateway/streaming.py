"""The answers that outlive the handler: a complete answer settled after its last byte, and a relayed
event stream metered and settled in `finally` whatever happens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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
        except BaseException:  # cancelled or failed while sending: settle all the same
            await settle(self.admission, self.used_tokens, shielded=True)
            raise
        await settle(self.admission, self.used_tokens, shielded=False)


async def settle(admission: Admission, used_tokens: int, *, shielded: bool) -> None:
    """Settle an answer's reservation; `shielded` where its task was cancelled (a cancelled task
    raises again at every await) or its client left. Elsewhere nothing cancels a finished request's
    task but a shutdown, and on the limiter's pipe the settling script is written before the call first
    suspends, so the shield (anyio's cancel scope, on every request otherwise) is only paid for where
    it is needed."""
    if shielded:
        with anyio.CancelScope(shield=True):
            await admission.settle(used_tokens)
    else:
        await admission.settle(used_tokens)


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
        watch: Departure | None = None  # from the first byte on
        failing = False  # an exception other than the client's socket goes up

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
            watch = Departure(receive)
            try:
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
                watch.finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except asyncio.CancelledError:
                if not watch.absorbed():
                    raise
            finally:
                watch.stop()
        except OSError:
            pass  # the client's socket: a disconnect, unless the last byte was already going out
        except BaseException:  # cancelled from outside: the server is stopping or the client left
            failing = True
            raise
        finally:
            # Whatever ended the relay before its last byte (the client leaving, a socket error, a
            # cancellation) is a disconnect; the stream that got there ended as it says.
            disconnected = watch is None or not watch.finished
            if gateway.inflight is not None:
                gateway.inflight.unwatch(self.sample.request_id)
            if disconnected:
                outcome = after_disconnect(meter)
            metered = meter.finish(outcome, bill_prompt_without_output=bill)
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
            connected.response.close()
            await settle(self.admission, usage.total_tokens, shielded=failing or disconnected)


class Departure:
    """Notices a client that leaves before the stream's end, and stops the relay for it.

    uvicorn drops what is sent to a closed connection without a word, so a task listens for
    `http.disconnect` beside the relay and cancels the relaying task if it comes before the last byte;
    the relay takes that cancellation back (`absorbed`) and settles the stream as a disconnect. Plain
    asyncio, as `asyncio.timeout` does it: an anyio task group cost a task-group scope, a spawned task
    and a cancellation that formats the cancelling task's repr, ~9 % of a streaming worker's samples
    (py-spy).
    """

    def __init__(self, receive: Receive) -> None:
        self.finished = False  # the last byte is going out: a disconnect from now on is the normal end
        self.left = False  # the client went away first, and the relay was cancelled for it
        self._relaying = asyncio.current_task()
        self._listener = asyncio.get_running_loop().create_task(self._listen(receive))

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finished and self._relaying is not None:
            self.left = True
            self._relaying.cancel()

    def absorbed(self) -> bool:
        """In an `except CancelledError` around the relay: whether the cancellation was this watch's
        own and nobody else's (then it is taken back and the relay ends as a disconnect)."""
        return self.left and self._relaying is not None and self._relaying.uncancel() == 0

    def stop(self) -> None:
        self._listener.cancel()


def after_disconnect(meter: StreamMeter) -> Outcome | None:
    """The outcome of a stream whose client went away: if the upstream had failed first (the client may
    leave because of it) an upstream error; if the stream was already complete (`[DONE]` relayed, the
    client closed before our last bookkeeping) read it from the stream; otherwise a disconnect."""
    if meter.error is not None:
        return Outcome.UPSTREAM_ERROR
    if meter.done:
        return None
    return Outcome.CLIENT_DISCONNECTED
