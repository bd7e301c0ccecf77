"""WATCH requests: the events of a resource streamed as JSON lines, from a resourceVersion or
from the current objects, with bookmarks, until the timeout or the end of the watch."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from kubetune_localcluster.errors import Gone, bad_request
from kubetune_localcluster.objects import Object
from kubetune_localcluster.reads import Reads, selection
from kubetune_localcluster.resources import Resource
from kubetune_localcluster.store import Store
from kubetune_localcluster.watch import WatchEvent
from kubetune_localcluster.wire import accepts, dumps, flag, present

DEFAULT_WATCH_TIMEOUT = 1800.0
BOOKMARK_EVERY = 60.0


class WatchStreams:
    """Serves watches from the store's watchers (Tables through `Reads.table`)."""

    def __init__(self, store: Store, reads: Reads) -> None:
        self.store = store
        self.reads = reads

    async def watch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str | None = None,
    ) -> web.StreamResponse:
        query = request.query
        predicate = selection(request, resource)
        if name is not None:  # the legacy /watch/.../NAME form
            inner = predicate

            def predicate(obj: Object) -> bool:
                return obj["metadata"]["name"] == name and (inner is None or inner(obj))

        version = query.get("resourceVersion") or ""
        initial = flag(query.get("sendInitialEvents")) if "sendInitialEvents" in query else False
        since: int | None = None
        if version not in ("", "0") and not initial:
            try:
                since = int(version)
            except ValueError as error:
                raise bad_request(f"invalid resource version: {version!r}") from error
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        bookmarks = (
            flag(query.get("allowWatchBookmarks")) if "allowWatchBookmarks" in query else False
        )
        table = accepts(request, **{"as": "Table"})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            watch, first = self.store.watch(resource.storage, namespace, predicate, since)
        except Gone as error:
            await response.prepare(request)
            await response.write(dumps({"type": "ERROR", "object": error.status()}) + b"\n")
            return response
        try:
            await response.prepare(request)

            def line(event: WatchEvent) -> bytes:
                if table:
                    rows = self.reads.table(request, resource, [event.obj])
                    return dumps({"type": event.type, "object": rows}) + b"\n"
                if event.lines is None:
                    event.lines = {}
                cached = event.lines.get(resource.group_version)
                if cached is None:
                    body = {"type": event.type, "object": present(resource, event.obj)}
                    cached = event.lines[resource.group_version] = dumps(body) + b"\n"
                return cached

            if first:
                await response.write(b"".join(line(event) for event in first))
            if initial:
                await response.write(self.bookmark(resource, initial_end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(min(left, BOOKMARK_EVERY)):
                        event = await watch.queue.get()
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        await response.write(self.bookmark(resource))
                    continue
                if event is None:
                    break
                batch = [line(event)]
                while not watch.queue.empty():
                    more = watch.queue.get_nowait()
                    if more is None:
                        watch.queue.put_nowait(None)
                        break
                    batch.append(line(more))
                await response.write(b"".join(batch))
            if bookmarks and not watch.closed:
                await response.write(self.bookmark(resource))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(resource.storage, watch)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def bookmark(self, resource: Resource, *, initial_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        body = {"kind": resource.kind, "apiVersion": resource.group_version, "metadata": metadata}
        return dumps({"type": "BOOKMARK", "object": body}) + b"\n"
