"""The list/watch client against a server that speaks the API's wire format: paging, resuming
after a normal end, bookmarks, and relisting on 410 (in the stream and as HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from portal.observe.kubernetes.kinds import LEADER_WORKER_SETS, PODS, Kind
from portal.observe.kubernetes.listwatch import Changed, ListWatch, Relisted
from tests.observe.kubernetes import factories as k
from tests.observe.kubernetes.apiserver import FakeApiServer
from tests.observe.kubernetes.support import api_server, cluster_for, eventually


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Relisted | Changed] = []

    def __call__(self, kind: Kind, change: Relisted | Changed) -> None:
        self.seen.append(change)

    def relists(self) -> list[Relisted]:
        return [c for c in self.seen if isinstance(c, Relisted)]

    def changes(self) -> list[tuple[str, str]]:
        return [(c.type, c.object["metadata"]["name"]) for c in self.seen if isinstance(c, Changed)]


async def start(
    server: FakeApiServer, tmp_path: Path, kind: Kind = PODS, **kw: object
) -> tuple[ListWatch, Recorder, asyncio.Task[None]]:
    client = cluster_for(server, tmp_path).client()
    watch = ListWatch(client, kind, k.NS, "cn-east", backoff=(0.01, 0.05), **kw)  # type: ignore[arg-type]
    sink = Recorder()
    task = asyncio.create_task(watch.run(sink))
    return watch, sink, task


async def stop(task: asyncio.Task[None], watch: ListWatch) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await watch.client.aclose()


def test_lists_in_pages_then_watches_from_the_lists_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(*(k.pod(f"p{i}") for i in range(5)), k.pod("other", region="cn-south"))
            watch, sink, task = await start(server, tmp_path, page_size=2)
            await eventually(lambda: server.watch_requests("pods"), what="a watch")
            listed = sink.relists()[0]
            assert sorted(o["metadata"]["name"] for o in listed.objects) == [f"p{i}" for i in range(5)]
            pages = server.list_requests("pods")
            assert [p.get("limit") for p in pages] == ["2", "2", "2"]
            assert "continue" not in pages[0] and all("continue" in p for p in pages[1:])
            assert (
                pages[0]["labelSelector"]
                == "app.kubernetes.io/managed-by=modelfleet,modelfleet.io/region=cn-east"
            )
            first = server.watch_requests("pods")[0]
            assert first["resourceVersion"] == listed.resource_version == str(server.rv)
            assert (first["allowWatchBookmarks"], first["timeoutSeconds"]) == ("true", "300")
            server.put(k.ready_pod("p1"))
            await eventually(lambda: sink.changes() == [("MODIFIED", "p1")])
            server.delete("Pod", "p2")
            await eventually(lambda: sink.changes()[-1] == ("DELETED", "p2"))
            await stop(task, watch)

    asyncio.run(scenario())


def test_an_expired_continue_token_restarts_the_list(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(*(k.pod(f"p{i}") for i in range(3)))
            server.continue_expired = True
            watch, sink, task = await start(server, tmp_path, page_size=2)
            await eventually(lambda: sink.relists())
            assert len(sink.relists()[0].objects) == 3
            assert len(server.list_requests("pods")) == 4  # page, expired page, page, page
            await stop(task, watch)

    asyncio.run(scenario())


def test_a_normal_end_resumes_from_the_last_version_and_bookmarks_move_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(k.pod("p0"))
            watch, sink, task = await start(server, tmp_path)
            await eventually(lambda: server.open_watches == 1)
            server.put(k.pod("p0", phase="Running"))
            await eventually(lambda: sink.changes() == [("MODIFIED", "p0")])
            server.put(k.pod("unrelated", region="cn-south"))  # moves the version; not selected
            server.bookmark()
            await eventually(lambda: watch.resource_version == str(server.rv), what="the bookmark's version")
            server.end_watches()
            await eventually(lambda: len(server.watch_requests("pods")) == 2)
            assert server.watch_requests("pods")[1]["resourceVersion"] == str(server.rv)
            assert len(server.list_requests("pods")) == 1  # resumed, not relisted
            assert len(sink.relists()) == 1
            await stop(task, watch)

    asyncio.run(scenario())


def test_a_410_in_the_stream_relists(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(k.pod("p0"), k.pod("p1"))
            watch, sink, task = await start(server, tmp_path)
            await eventually(lambda: server.open_watches == 1)
            await watch.client.aclose()  # the watcher is away …
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.delete("Pod", "p1")  # … while p1 is deleted and the history compacted
            server.compact()
            stale = watch.resource_version
            watch.client = cluster_for(server, tmp_path).client()
            task = asyncio.create_task(watch.run(sink))
            await eventually(lambda: len(sink.relists()) == 2, what="a relist after the 410")
            assert [o["metadata"]["name"] for o in sink.relists()[1].objects] == ["p0"]
            assert server.watch_requests("pods")[1]["resourceVersion"] == stale
            assert watch.lists == 2
            # And once more, while it watches: its new watch must be open first, or nothing expires.
            await eventually(lambda: server.open_watches == 1, what="the watch after the relist")
            server.expire_open_watches()
            await eventually(lambda: len(sink.relists()) == 3)
            await stop(task, watch)

    asyncio.run(scenario())


def test_a_plain_http_410_relists(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(k.pod("p0"))
            watch, sink, task = await start(server, tmp_path)
            await eventually(lambda: server.open_watches == 1)
            server.http_gone_once = True
            server.end_watches()
            await eventually(lambda: len(sink.relists()) == 2)
            assert len(server.list_requests("pods")) == 2
            await stop(task, watch)

    asyncio.run(scenario())


def test_a_kind_the_cluster_does_not_serve_is_empty(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.served.discard("leaderworkersets")
            watch, sink, task = await start(server, tmp_path, LEADER_WORKER_SETS)
            await eventually(lambda: sink.relists())
            assert sink.relists()[0].objects == []
            await stop(task, watch)

    asyncio.run(scenario())


def test_without_the_token_the_server_refuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            path = server.kubeconfig(tmp_path / "kc.json")
            path.write_text(path.read_text().replace("observer-test-token", "wrong"))
            from portal.observe.kubernetes.access import RegionCluster

            client = RegionCluster("demo", "cn-east", k.NS, "kc", str(path)).client()
            watch = ListWatch(client, PODS, k.NS, "cn-east", backoff=(0.01, 0.05))
            sink = Recorder()
            task = asyncio.create_task(watch.run(sink))
            await eventually(lambda: len(server.list_requests("pods")) >= 2, what="retries")
            assert sink.seen == []
            await stop(task, watch)

    asyncio.run(scenario())
