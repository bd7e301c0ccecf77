"""Watch events and the watchers they are fanned out to, each through its own bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from kubetune_localcluster.objects import Object


@dataclass(slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    obj: Object
    old: Object | None  # the previous state (MODIFIED, DELETED), to match selectors on it
    rv: int
    # The serialized watch line per apiVersion, so that N watchers cost one serialization.
    lines: dict[str, bytes] | None = None


class Watch:
    """One watcher: its filter and its bounded queue (None in the queue ends the watch)."""

    def __init__(
        self,
        namespace: str | None,
        predicate: Callable[[Object], bool] | None,
        maxsize: int,
    ) -> None:
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(maxsize)
        self.closed = False

    def translate(self, event: WatchEvent) -> WatchEvent | None:
        """The event this watcher sees: a change into or out of its selector is ADDED or
        DELETED, as the API server's watch cache words it."""
        obj_ns = event.obj["metadata"].get("namespace")
        if self.namespace is not None and obj_ns != self.namespace:
            return None
        if self.predicate is None:
            return event
        now = self.predicate(event.obj)
        before = event.old is not None and self.predicate(event.old)
        if event.type == "MODIFIED":
            if now and before:
                return event
            if now:
                return WatchEvent("ADDED", event.obj, event.old, event.rv)
            if before:
                return WatchEvent("DELETED", event.obj, event.old, event.rv)
            return None
        if event.type == "DELETED":
            return event if self.predicate(event.old or event.obj) else None
        return event if now else None

    def offer(self, event: WatchEvent) -> None:
        """Queue an event; a watcher that has fallen far behind is closed (it resumes from
        the last resourceVersion it saw, as a client of a real server does)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
