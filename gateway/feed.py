"""Following the change feed: a thread that `LISTEN`s on PostgreSQL and wakes the gateway's reload.

The control plane announces routable changes with `NOTIFY` in the transaction that made them
(`store/feed.py`), so every gateway replica reloads within moments of the commit instead of at its next
poll. The listener holds one connection of its own (not from the pool), reconnects with a short
back-off after a failure, and calls `on_change` from its thread: the caller hands it to its loop.
"""

from __future__ import annotations

import logging
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
    def __init__(self, url: str, on_change: Callable[[], None], *, poll_seconds: float = 0.25) -> None:
        self.url = url
        self.on_change = on_change
        # How often the thread looks at its stop flag: what stopping waits at most. Waking up idle is
        # one poll(2) call, so a quarter second costs nothing and keeps a gateway's shutdown short.
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelfleet-feed", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in effect (tests wait for it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_seconds + 5)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.2
                    self.on_change()  # anything announced while we were not listening
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=self.poll_seconds, stop_after=1):
                            self.on_change()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("gateway: change feed lost (%s); reconnecting in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
