"""The limiter's multiplexed script connection (gateway/limits/pipe.py), against the real Redis and
against loopback servers that misbehave (hang up, never answer, answer garbage)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.limits.link import RedisLink
from gateway.limits.pipe import RedisPipe
from tests.gateway.test_limits_helpers import prefix, redis_url

__all__ = ["prefix", "redis_url"]  # fixtures

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2}"


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def pipe_to(url: str, **options: float) -> RedisPipe:
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    pipe = RedisPipe.serving({**kwargs, **options})
    assert pipe is not None
    return pipe


def test_concurrent_calls_each_get_their_own_reply(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        pipe = pipe_to(redis_url)
        try:
            replies = await asyncio.gather(
                *(pipe.evalsha(_sha1(ECHO), ECHO, [f"{prefix}:{n}"], [f"v{n}", n]) for n in range(2000))
            )
            assert replies == [[f"{prefix}:{n}".encode(), f"v{n}".encode(), 2 * n] for n in range(2000)]
        finally:
            await pipe.aclose()

    asyncio.run(run())


def test_a_script_the_server_lost_is_sent_again_and_a_scripts_error_is_raised(redis_url: str) -> None:
    script = f"return '{uuid.uuid4().hex}'"  # never loaded before: the first EVALSHA is NOSCRIPT

    async def run() -> None:
        pipe = pipe_to(redis_url)
        try:
            assert await pipe.evalsha(_sha1(script), script, [], []) == script.split("'")[1].encode()
            assert await pipe.evalsha(_sha1(script), script, [], []) == script.split("'")[1].encode()
            broken = "return redis.call('NOSUCHCOMMAND')"
            with pytest.raises(ResponseError):
                await pipe.evalsha(_sha1(broken), broken, [], [])
            # The connection is still good after a server-side error.
            assert await pipe.evalsha(_sha1(ECHO), ECHO, ["k"], ["a", 1]) == [b"k", b"a", 2]
        finally:
            await pipe.aclose()

    asyncio.run(run())


def test_the_urls_database_is_selected_and_refused_credentials_name_the_set_up(redis_url: str) -> None:
    key = f"test:pipe:{uuid.uuid4().hex}"
    setter = "redis.call('SET', KEYS[1], ARGV[1]); return 1"
    other = redis_url.rsplit("/", 1)[0] + "/5" if redis_url.count("/") > 2 else redis_url + "/5"

    async def run() -> None:
        pipe = pipe_to(other)
        try:
            assert await pipe.evalsha(_sha1(setter), setter, [key], ["five"]) == 1
        finally:
            await pipe.aclose()
        wrong = pipe_to(redis_url, password="not-the-password")  # type: ignore[arg-type]
        with pytest.raises(RedisConnectionError, match="refused the connection's set-up"):
            await wrong.evalsha(_sha1(ECHO), ECHO, ["k"], ["a", 1])
        await wrong.aclose()

    asyncio.run(run())
    db5 = redis.Redis.from_url(other)
    try:
        assert db5.get(key) == b"five"
        db5.delete(key)
    finally:
        db5.close()


def test_unix_sockets_and_tls_stay_on_redis_py() -> None:
    assert RedisPipe.serving({"path": "/run/redis.sock", "db": 0}) is None
    assert RedisPipe.serving({"host": "h", "port": 6380, "ssl": True}) is None
    link = RedisLink(redis.asyncio.Redis.from_url("unix:///run/redis.sock"))
    assert link.pipe is None


@contextlib.contextmanager
def loopback(behaviour: str) -> Iterator[int]:
    """A TCP server on a free port that reads a command and then hangs up (`hang_up`), says nothing
    (`silent`), answers bytes that are not RESP (`garbage`), or answers the n-th command `n`, the
    second one 0.35 s late (`late`)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            if behaviour == "late":
                for n in range(3):
                    conn.recv(65536)
                    time.sleep(0.35 if n == 1 else 0)
                    conn.sendall(b":%d\r\n" % n)
                continue
            conn.recv(65536)
            if behaviour == "hang_up":
                conn.close()
            elif behaviour == "garbage":
                conn.sendall(b"?what\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("behaviour", ["hang_up", "garbage"])
def test_a_broken_connection_fails_every_call_in_flight_and_the_next_call_opens_a_new_one(
    behaviour: str,
) -> None:
    async def run() -> None:
        with loopback(behaviour) as port:
            pipe = RedisPipe("127.0.0.1", port, timeout_s=2.0)
            try:
                calls = [pipe.evalsha("0" * 40, ECHO, ["k"], ["a", n]) for n in range(5)]
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
                first = pipe._current
                with pytest.raises(RedisConnectionError):
                    await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 1])
                assert pipe._current is not first  # a new connection was opened for it
            finally:
                await pipe.aclose()

    asyncio.run(run())


def test_a_silent_server_times_out_and_retire_moves_new_calls_to_a_fresh_connection() -> None:
    async def run() -> None:
        with loopback("silent") as port:
            pipe = RedisPipe("127.0.0.1", port, timeout_s=0.2)
            try:
                with pytest.raises(RedisTimeoutError):
                    await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 1])
                stuck = pipe._current
                assert stuck is not None and stuck.waiting  # its reply may still come
                pipe.retire()
                with pytest.raises(RedisTimeoutError):
                    await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 1])
                assert pipe._current is not stuck
                await asyncio.sleep(0.5)  # two timeouts after retiring, the old one is closed
                assert stuck.closed.done()
            finally:
                await pipe.aclose()

    asyncio.run(run())


def test_each_call_waits_its_own_timeout_and_a_late_reply_goes_to_the_call_it_answers() -> None:
    """One timer serves every call on a connection: after an answered call's deadline it waits for the
    next call's own, and a reply that comes after its call timed out is skipped, not given to the next."""

    async def run() -> None:
        with loopback("late") as port:
            pipe = RedisPipe("127.0.0.1", port, timeout_s=0.25)
            try:
                assert await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 0]) == 0
                await asyncio.sleep(0.15)  # the first call's deadline comes while the second waits
                sent = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 1])
                assert time.monotonic() - sent >= 0.24
                await asyncio.sleep(0.2)  # its reply (1) has come by now
                assert await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 2]) == 2
            finally:
                await pipe.aclose()

    asyncio.run(run())


def test_nothing_listening_is_a_connection_error_naming_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run() -> None:
        pipe = RedisPipe("127.0.0.1", port)
        with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}"):
            await pipe.evalsha("0" * 40, ECHO, ["k"], ["a", 1])
        await pipe.aclose()

    asyncio.run(run())
