"""A stream's relay stops when its client leaves, and only then (gateway/streaming.py `Departure`).

The client is an ASGI `receive` fed from a queue, as a server feeds it; the relay is a task waiting
as the relay waits for the upstream's next piece. The end-to-end cases (a client gone before the first
token, mid-stream) run through uvicorn in test_gateway_metering.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.streaming import Departure


def on_a_loop(scenario: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    @functools.wraps(scenario)
    def test() -> None:
        async def bounded() -> None:
            async with asyncio.timeout(5):
                await scenario()

        asyncio.run(bounded())

    return test


class Client:
    """The ASGI receive channel of one request whose body was read already."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()

    def leave(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


def relaying() -> tuple[Client, asyncio.Future[None], asyncio.Task[Departure]]:
    """A relay under way: its client, the upstream answer it waits for, and its task."""
    client, upstream = Client(), asyncio.get_running_loop().create_future()
    return client, upstream, asyncio.create_task(relay(client, upstream))


async def relay(client: Client, upstream: asyncio.Future[None]) -> Departure:
    """Wait for the upstream under a watch, as RelayResponse does; the watch says how it ended."""
    watch = Departure(client.receive)
    try:
        await upstream
        watch.finished = True
        await asyncio.sleep(0.01)  # the last send: a disconnect now is the normal end
    except asyncio.CancelledError:
        if not watch.absorbed():
            raise
    finally:
        watch.stop()
    return watch


@on_a_loop
async def test_a_client_that_leaves_stops_the_relay_which_ends_normally() -> None:
    client, upstream, task = relaying()
    await asyncio.sleep(0)
    client.leave()
    watch = await asyncio.wait_for(task, 1)  # not waiting for the upstream any more
    assert watch.left and upstream.cancelled()
    assert task.cancelling() == 0  # the cancellation was taken back: later awaits run


@on_a_loop
async def test_a_client_that_stays_is_relayed_to_the_end() -> None:
    client, upstream, task = relaying()
    client.messages.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    await asyncio.sleep(0.01)
    assert not task.done()
    upstream.set_result(None)
    watch = await task
    assert watch.finished and not watch.left


@on_a_loop
async def test_a_disconnect_after_the_last_byte_is_the_normal_end() -> None:
    client, upstream, task = relaying()
    upstream.set_result(None)
    await asyncio.sleep(0.001)  # the relay is sending its last byte
    client.leave()
    watch = await task
    assert watch.finished and not watch.left


@on_a_loop
async def test_a_cancellation_from_outside_is_not_taken_for_a_disconnect() -> None:
    *_, task = relaying()
    await asyncio.sleep(0)
    task.cancel()  # the server is stopping
    with pytest.raises(asyncio.CancelledError):
        await task


@on_a_loop
async def test_a_stop_while_the_client_leaves_is_still_a_stop() -> None:
    """Both at once: the relay's cancellation is the client's and the server's; it must go on up."""
    client, _, task = relaying()
    await asyncio.sleep(0)
    client.leave()
    await asyncio.sleep(0)  # the listener ran: it cancelled the relay, not yet resumed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
