"""Import from URL under abuse: a server that drips its index byte by byte is cut at the overall
deadline (not after the last byte), an index over the size cap is refused, imports beyond the cap on
concurrent ones are answered 503 at once, and loopback or private hosts are refused unless allowed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from portal.errors import Invalid, Unavailable
from portal.plaza import importer


@contextmanager
def drip_server(total: int, every: float) -> Iterator[str]:
    """An HTTP server that answers with a body of `total` bytes, one byte each `every` seconds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
                for _ in range(total):
                    if stop.wait(every):
                        return
                    conn.sendall(b" ")
            except OSError:
                return  # the client gave up: what we want

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/index.yaml"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_slow_drip_is_cut_at_the_deadline() -> None:
    with drip_server(total=1000, every=0.1) as url:
        started = time.monotonic()
        with pytest.raises(Invalid) as refused:
            importer.fetch(url, importer.FetchLimits(deadline_seconds=1.0, allow_private=True))
        took = time.monotonic() - started
    assert "longer than 1 s" in refused.value.message
    assert took < 2.0  # per-read timeouts alone would have waited for all 1000 bytes (100 s)


def test_an_index_over_the_size_cap_is_refused() -> None:
    with drip_server(total=5000, every=0) as url, pytest.raises(Invalid) as refused:
        importer.fetch(url, importer.FetchLimits(max_bytes=1024, allow_private=True))
    assert "5000 bytes; the limit is 1024" in refused.value.message


def test_imports_beyond_the_cap_are_answered_503_at_once() -> None:
    gate = importer.ImportGate(2)
    with gate, gate:
        started = time.monotonic()
        with pytest.raises(Unavailable), gate:
            pass
        assert time.monotonic() - started < 0.1  # refused, not queued
    with gate:  # slots come back
        pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_and_private_hosts_are_refused_unless_allowed(host: str) -> None:
    with drip_server(total=2, every=0) as url:
        url = url.replace("127.0.0.1", host)
        with pytest.raises(Invalid) as refused:
            importer.fetch(url, importer.FetchLimits())
        assert refused.value.fields[0].field == "url" and "loopback or private" in refused.value.message
        assert importer.fetch(url, importer.FetchLimits(allow_private=True)) == b"  "


def test_the_api_applies_the_settings(client: TestClient) -> None:
    with drip_server(total=1000, every=0.1) as url:
        client.app.state.services.settings.plaza_import_deadline_seconds = 0.5  # type: ignore[attr-defined]
        response = client.post("/api/plaza/models:parse", json={"url": url})
    assert response.status_code == 422
    assert "longer than 0.5 s" in response.json()["error"]["message"]
