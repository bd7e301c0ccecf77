"""Watches: from a resourceVersion with no replay and no loss, synthetic ADDED without one,
selectors (objects moving in and out of them), 410 Expired, timeoutSeconds, bookmarks, and a
watcher that falls far behind is closed."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from kubetune_localcluster.apiserver import ApiServer
from tests.localcluster.conftest import PODS, call, pod, read_events

MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_watch_from_a_version_sends_only_later_events(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("old"))
    _, listed = await call(http, "GET", PODS)
    version = listed["metadata"]["resourceVersion"]
    await call(http, "POST", PODS, pod("new"))  # after the list, before the watch
    async with http.get(PODS, params={"watch": "true", "resourceVersion": version}) as response:
        await call(
            http, "PATCH", f"{PODS}/old", {"metadata": {"labels": {"a": "b"}}}, headers=MERGE
        )
        await call(http, "DELETE", f"{PODS}/new")
        events = await read_events(response, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"),
        ("MODIFIED", "old"),
        ("DELETED", "new"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > int(version)


async def test_watch_without_a_version_starts_with_the_current_objects(
    http: aiohttp.ClientSession,
) -> None:
    await call(http, "POST", PODS, pod("a"))
    await call(http, "POST", PODS, pod("b"))
    async with http.get(PODS, params={"watch": "1"}) as response:
        first = await read_events(response, 2)
        await call(http, "POST", PODS, pod("c"))
        live = await read_events(response, 1)
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in first) == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert (live[0]["type"], live[0]["object"]["metadata"]["name"]) == ("ADDED", "c")


async def test_watch_with_selectors_sees_objects_enter_and_leave(
    http: aiohttp.ClientSession,
) -> None:
    _, listed = await call(http, "GET", "/api/v1/pods")
    params = {
        "watch": "true",
        "resourceVersion": listed["metadata"]["resourceVersion"],
        "labelSelector": "app=x",
        "fieldSelector": "metadata.namespace=default",
    }
    async with http.get("/api/v1/pods", params=params) as response:
        await call(http, "POST", PODS, pod("other", labels={"app": "y"}))
        await call(http, "POST", PODS, pod("a", labels={"app": "y"}))
        await call(
            http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "x"}}}, headers=MERGE
        )
        await call(
            http, "PATCH", f"{PODS}/a", {"metadata": {"annotations": {"n": "1"}}}, headers=MERGE
        )
        await call(
            http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"app": "z"}}}, headers=MERGE
        )
        events = await read_events(response, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]


async def test_watch_by_node_name_for_the_kubelet(http: aiohttp.ClientSession) -> None:
    params = {"watch": "true", "fieldSelector": "spec.nodeName=node-1"}
    async with http.get("/api/v1/pods", params=params) as response:
        await call(http, "POST", PODS, pod("a"))
        await call(http, "POST", f"{PODS}/a/binding", {"target": {"name": "node-1"}})
        events = await read_events(response, 1)
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["spec"]["nodeName"] == "node-1"


async def test_a_version_older_than_the_window_is_expired(http: aiohttp.ClientSession) -> None:
    async with (
        ApiServer(event_window=3) as small,
        aiohttp.ClientSession(small.url, headers=small.headers) as session,
    ):
        _, listed = await call(session, "GET", PODS)
        version = listed["metadata"]["resourceVersion"]
        for i in range(5):
            await call(session, "POST", PODS, pod(f"p{i}"))
        async with session.get(PODS, params={"watch": "true", "resourceVersion": version}) as r:
            events = await read_events(r, 2)
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        # A recent version still resumes.
        _, listed = await call(session, "GET", PODS)
        recent = listed["metadata"]["resourceVersion"]
        async with session.get(PODS, params={"watch": "true", "resourceVersion": recent}) as r:
            await call(session, "DELETE", f"{PODS}/p0")
            events = await read_events(r, 1)
        assert events[0]["type"] == "DELETED"


async def test_timeout_seconds_ends_the_watch_with_a_bookmark(
    http: aiohttp.ClientSession,
) -> None:
    _, listed = await call(http, "GET", PODS)
    params = {
        "watch": "true",
        "timeoutSeconds": "1",
        "allowWatchBookmarks": "true",
        "resourceVersion": listed["metadata"]["resourceVersion"],
    }
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(PODS, params=params) as response:
        events = await read_events(response, 10, timeout=5)
    assert 0.9 <= loop.time() - started < 4
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert (
        events[0]["object"]["metadata"]["resourceVersion"] == listed["metadata"]["resourceVersion"]
    )


async def test_send_initial_events_ends_with_an_annotated_bookmark(
    http: aiohttp.ClientSession,
) -> None:
    await call(http, "POST", PODS, pod("a"))
    params = {
        "watch": "true",
        "sendInitialEvents": "true",
        "allowWatchBookmarks": "true",
        "resourceVersionMatch": "NotOlderThan",
    }
    async with http.get(PODS, params=params) as response:
        events = await read_events(response, 2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_a_watcher_far_behind_is_closed(http: aiohttp.ClientSession) -> None:
    async with (
        ApiServer(watch_queue=2) as small,
        aiohttp.ClientSession(small.url, headers=small.headers) as session,
    ):
        _, listed = await call(session, "GET", PODS)
        version = listed["metadata"]["resourceVersion"]
        async with session.get(PODS, params={"watch": "true", "resourceVersion": version}) as r:
            # The writes run in this task, with no await the watch handler could run in.
            ns = small.registry.find("", "v1", "configmaps")
            assert ns is not None
            for i in range(5):
                small.store.create(ns, "default", {"metadata": {"name": f"c{i}"}})
            pods = small.registry.find("", "v1", "pods")
            assert pods is not None
            for i in range(5):
                small.store.create(pods, "default", pod(f"p{i}"))
            events = await read_events(r, 10)
        assert events == []  # closed: the client resumes from the last version it saw
        async with session.get(PODS, params={"watch": "true", "resourceVersion": version}) as r:
            events = await read_events(r, 5)
        assert [e["object"]["metadata"]["name"] for e in events] == [f"p{i}" for i in range(5)]


async def test_stop_ends_open_watches(server: ApiServer) -> None:
    params = {"watch": "true", "resourceVersion": "1"}
    async with (
        aiohttp.ClientSession(server.url, headers=server.headers) as session,
        session.get(PODS, params=params) as r,
    ):
        reading: asyncio.Task[Any] = asyncio.ensure_future(read_events(r, 1))
        await asyncio.wait_for(server.stop(), 5)
        assert await asyncio.wait_for(reading, 5) == []
