"""Request hooks: each resource request described as authorization sees it, and held at will."""

from __future__ import annotations

import asyncio

import aiohttp

from kubetune_localcluster.access import ApiRequest
from kubetune_localcluster.apiserver import ApiServer

PODS = "/api/v1/namespaces/default/pods"
POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}


async def test_hooks_see_the_rbac_verb_resource_and_subresource(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    seen: list[ApiRequest] = []

    async def record(request: ApiRequest) -> None:
        seen.append(request)

    server.request_hooks.append(record)
    await http.post(PODS, json=POD)
    await http.get(PODS)
    await http.get(f"{PODS}/p")
    await http.patch(
        f"{PODS}/p/status",
        json={"status": {"phase": "Running"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    await http.delete(f"{PODS}/p")
    await http.delete(PODS)
    await http.get("/version")  # not a resource request: no hook
    described = [(r.verb, r.resource, r.subresource, r.namespace, r.name) for r in seen]
    assert described == [
        ("create", "pods", None, "default", None),
        ("list", "pods", None, "default", None),
        ("get", "pods", None, "default", "p"),
        ("patch", "pods", "status", "default", "p"),
        ("delete", "pods", None, "default", "p"),
        ("deletecollection", "pods", None, "default", None),
    ]
    async with http.get(f"{PODS}?watch=true&timeoutSeconds=0"):
        pass
    assert (seen[-1].verb, seen[-1].group) == ("watch", "")


async def test_a_hook_holds_a_request_until_released(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    held = asyncio.Event()
    release = asyncio.Event()

    async def gate(request: ApiRequest) -> None:
        if request.verb == "create":
            held.set()
            await release.wait()

    server.request_hooks.append(gate)
    creating = asyncio.ensure_future(http.post(PODS, json=POD))
    await held.wait()
    async with http.get(PODS) as listing:  # other requests go on; the pod is not there yet
        assert (await listing.json())["items"] == []
    release.set()
    async with await creating as created:
        assert created.status == 201
