"""Following the change feed: a thread that `LISTEN`s on PostgreSQL and wakes the gateway's reload.

The control plane announces routable changes with `NOTIFY` in the transaction that made them
(`store/feed.py`), so every gateway replica reloads within moments of the commit instead of at its next
poll. The listener holds one connection of its own (not from the pool), reconnects with a short
back-off after a failure, and calls `on_change` from its thread: the caller hands it to its loop.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import URL

from store.feed import CHANNEL

log = logging.getLogger("modelfleet.gateway")


def listen_url(url: URL) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL (`postgresql+psycopg://…` → `postgresql://…`)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class FeedListener:
    def __init__(self, url: str, on_change: Callable[[], None]) -> None:
        self.url = url
        self.on_change = on_change
        self._stop = threading.Event()
        # The thread sleeps in select(2) on the connection's socket and this pair's far end, which
        # `stop` writes to: idle, it never wakes (psycopg's own waits poll ~10 times a second, each
        # taking the GIL from the requests).
        self._waker, self._wakeup = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="modelfleet-feed", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in effect (tests wait for it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._waker.send(b"x")
        self._thread.join(timeout=5)
        self._waker.close()
        self._wakeup.close()

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.2
                    self.on_change()  # anything announced while we were not listening
                    wakeup = self._wakeup.fileno()
                    while not self._stop.is_set():
                        readable, _, _ = select.select([connection.fileno(), wakeup], [], [])
                        if wakeup in readable:
                            return
                        # timeout=0: take what arrived (a lost connection raises here) and go back to
                        # sleep; several notifications in one packet are one reload.
                        if sum(1 for _ in connection.notifies(timeout=0)):
                            self.on_change()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("gateway: change feed lost (%s); reconnecting in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
