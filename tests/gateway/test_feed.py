"""The change-feed listener against a real PostgreSQL: notifications reach it, a lost connection is
reopened, and stopping does not wait for anything (the thread sleeps until told)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from gateway.feed import FeedListener, listen_url
from store.feed import CHANNEL

# The change feed is PostgreSQL's LISTEN/NOTIFY (SQLite has none): only that parametrisation.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def pg_url(database_url: str) -> str:
    return listen_url(make_url(database_url))


def _notify(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_notify(%s, 'x')", (CHANNEL,))


def test_a_notification_reaches_the_listener_and_stopping_waits_for_nothing(pg_url: str) -> None:
    changes: list[float] = []
    changed = threading.Event()

    def on_change() -> None:
        changes.append(time.monotonic())
        changed.set()

    listener = FeedListener(pg_url, on_change)
    listener.start()
    try:
        assert listener.listening.wait(5)
        assert changed.wait(5)  # the first call: whatever was announced while it was not listening
        changed.clear()
        _notify(pg_url)
        assert changed.wait(2), "the NOTIFY did not reach the listener"
    finally:
        started = time.monotonic()
        listener.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 0.5, f"stop took {stopped_in:.2f} s"
    assert not listener._thread.is_alive()


def test_a_listener_whose_connection_is_killed_listens_again(pg_url: str) -> None:
    changed = threading.Event()
    listener = FeedListener(pg_url, changed.set)
    listener.start()
    try:
        assert listener.listening.wait(5) and changed.wait(5)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = %s AND datname = current_database()",
                (f"LISTEN {CHANNEL}",),
            ).fetchall()
        assert killed, "no listening backend found to terminate"
        deadline = time.monotonic() + 5
        while listener.listening.is_set() and time.monotonic() < deadline:  # it noticed the loss
            time.sleep(0.01)
        assert listener.listening.wait(5), "the listener did not reconnect"
        changed.clear()
        _notify(pg_url)
        assert changed.wait(2), "a NOTIFY after the reconnection did not reach the listener"
    finally:
        listener.stop()
