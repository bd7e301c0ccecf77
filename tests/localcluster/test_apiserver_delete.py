"""Deletion as a real API server and its controllers do it: finalizers, graceful pod
deletion, propagation policies and garbage collection through ownerReferences, namespaces
and CRDs taking their objects with them."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.localcluster.conftest import PODS, WIDGETS, call, owner_ref, pod, widget

MERGE = {"Content-Type": "application/merge-patch+json"}
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def exists(http: aiohttp.ClientSession, path: str) -> bool:
    status, _ = await call(http, "GET", path)
    return status == 200


async def test_finalizers_hold_the_object_until_the_last_one_goes(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    await call(http, "POST", WIDGETS, widget("w", finalizers=["a", "b"]))
    status, body = await call(http, "DELETE", f"{WIDGETS}/w")
    assert status == 200
    meta = body["metadata"]
    assert meta["deletionTimestamp"]
    assert meta["deletionGracePeriodSeconds"] == 0
    status, body = await call(
        http, "PATCH", f"{WIDGETS}/w", {"metadata": {"finalizers": ["a", "b", "c"]}}, headers=MERGE
    )
    assert status == 422
    assert "no new finalizers" in body["message"]
    await call(http, "PATCH", f"{WIDGETS}/w", {"metadata": {"finalizers": ["b"]}}, headers=MERGE)
    assert await exists(http, f"{WIDGETS}/w")
    status, body = await call(
        http, "PATCH", f"{WIDGETS}/w", {"metadata": {"finalizers": None}}, headers=MERGE
    )
    assert status == 200
    assert not await exists(http, f"{WIDGETS}/w")


async def test_delete_preconditions_and_status_bodies(http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", CONFIGMAPS, {"metadata": {"name": "c"}})
    status, body = await call(
        http, "DELETE", f"{CONFIGMAPS}/c", {"preconditions": {"uid": "not-the-uid"}}
    )
    assert status == 409
    assert "Precondition failed" in body["message"]
    status, body = await call(
        http, "DELETE", f"{CONFIGMAPS}/c", {"preconditions": {"uid": created["metadata"]["uid"]}}
    )
    assert status == 200
    assert body["kind"] == "Status"
    assert body["status"] == "Success"
    status, body = await call(http, "DELETE", f"{CONFIGMAPS}/c")
    assert status == 404
    assert body["reason"] == "NotFound"


async def test_a_pod_on_a_node_is_deleted_gracefully(http: aiohttp.ClientSession) -> None:
    spec = pod("a")
    spec["spec"]["nodeName"] = "node-1"
    spec["spec"]["terminationGracePeriodSeconds"] = 5
    await call(http, "POST", PODS, spec)
    await call(http, "POST", PODS, pod("unscheduled"))
    status, body = await call(http, "DELETE", f"{PODS}/a")
    assert status == 200
    assert body["metadata"]["deletionGracePeriodSeconds"] == 5
    assert await exists(http, f"{PODS}/a")  # the kubelet stops it, then deletes it with grace 0
    status, body = await call(http, "DELETE", f"{PODS}/a", params={"gracePeriodSeconds": "0"})
    assert status == 200
    assert not await exists(http, f"{PODS}/a")
    await call(http, "DELETE", f"{PODS}/unscheduled")
    assert not await exists(http, f"{PODS}/unscheduled")


async def test_background_deletion_collects_dependents(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, owner = await call(http, "POST", WIDGETS, widget("owner"))
    _, other = await call(http, "POST", WIDGETS, widget("other"))
    await call(http, "POST", PODS, pod("child", ownerReferences=[owner_ref(owner)]))
    await call(
        http,
        "POST",
        CONFIGMAPS,
        {
            "metadata": {
                "name": "grandchild",
                "ownerReferences": [owner_ref((await call(http, "GET", f"{PODS}/child"))[1])],
            }
        },
    )
    await call(
        http, "POST", PODS, pod("shared", ownerReferences=[owner_ref(owner), owner_ref(other)])
    )
    status, _ = await call(http, "DELETE", f"{WIDGETS}/owner")
    assert status == 200
    assert not await exists(http, f"{WIDGETS}/owner")
    assert not await exists(http, f"{PODS}/child")
    assert not await exists(http, f"{CONFIGMAPS}/grandchild")
    # A dependent with another owner stays, without the dangling reference.
    _, shared = await call(http, "GET", f"{PODS}/shared")
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["other"]


async def test_foreground_deletion_waits_for_blocking_dependents(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, owner = await call(http, "POST", WIDGETS, widget("owner"))
    await call(
        http,
        "POST",
        WIDGETS,
        widget("child", ownerReferences=[owner_ref(owner, block=True)], finalizers=["hold"]),
    )
    status, body = await call(
        http, "DELETE", f"{WIDGETS}/owner", {"propagationPolicy": "Foreground"}
    )
    assert status == 200
    assert body["metadata"]["finalizers"] == ["foregroundDeletion"]
    _, child = await call(http, "GET", f"{WIDGETS}/child")
    assert child["metadata"]["deletionTimestamp"]  # deleted, held by its own finalizer
    _, held = await call(http, "GET", f"{WIDGETS}/owner")
    assert held["metadata"]["deletionTimestamp"]
    await call(http, "PATCH", f"{WIDGETS}/child", {"metadata": {"finalizers": []}}, headers=MERGE)
    assert not await exists(http, f"{WIDGETS}/child")
    assert not await exists(http, f"{WIDGETS}/owner")


async def test_foreground_deletion_does_not_wait_for_non_blocking_dependents(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, owner = await call(http, "POST", WIDGETS, widget("owner"))
    await call(
        http,
        "POST",
        WIDGETS,
        widget("child", ownerReferences=[owner_ref(owner)], finalizers=["hold"]),
    )
    await call(http, "DELETE", f"{WIDGETS}/owner", params={"propagationPolicy": "Foreground"})
    assert not await exists(http, f"{WIDGETS}/owner")
    _, child = await call(http, "GET", f"{WIDGETS}/child")
    assert child["metadata"]["deletionTimestamp"]


async def test_orphan_deletion_leaves_dependents_without_the_reference(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, owner = await call(http, "POST", WIDGETS, widget("owner"))
    await call(http, "POST", PODS, pod("child", ownerReferences=[owner_ref(owner)]))
    await call(http, "DELETE", f"{WIDGETS}/owner", {"propagationPolicy": "Orphan"})
    assert not await exists(http, f"{WIDGETS}/owner")
    _, child = await call(http, "GET", f"{PODS}/child")
    assert child["metadata"].get("ownerReferences", []) == []


async def test_an_object_whose_owner_is_gone_is_collected(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    ghost = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    status, _ = await call(http, "POST", PODS, pod("orphaned", ownerReferences=[ghost]))
    assert status == 201
    assert not await exists(http, f"{PODS}/orphaned")
    # An owner of a kind this server does not serve is left alone, as the real GC does.
    job = {**ghost, "apiVersion": "batch/v1", "kind": "Job"}
    await call(http, "POST", PODS, pod("job-pod", ownerReferences=[job]))
    assert await exists(http, f"{PODS}/job-pod")


async def test_deleting_a_namespace_removes_its_objects(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    _, accounts = await call(http, "GET", "/api/v1/namespaces/team/serviceaccounts")
    assert [a["metadata"]["name"] for a in accounts["items"]] == ["default"]
    await call(http, "POST", "/api/v1/namespaces/team/pods", pod("a", finalizers=["hold"]))
    await call(http, "POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "c"}})
    status, body = await call(http, "DELETE", "/api/v1/namespaces/team")
    assert status == 200
    assert body["status"]["phase"] == "Terminating"
    assert not await exists(http, "/api/v1/namespaces/team/configmaps/c")
    status, body = await call(
        http, "POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "d"}}
    )
    assert status == 403
    assert body["reason"] == "Forbidden"
    assert await exists(http, "/api/v1/namespaces/team")  # the pod's finalizer holds it
    await call(
        http,
        "PATCH",
        "/api/v1/namespaces/team/pods/a",
        {"metadata": {"finalizers": None}},
        headers=MERGE,
    )
    assert not await exists(http, "/api/v1/namespaces/team")


async def test_delete_collection_by_label(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", CONFIGMAPS, {"metadata": {"name": "a", "labels": {"x": "1"}}})
    await call(http, "POST", CONFIGMAPS, {"metadata": {"name": "b"}})
    status, body = await call(http, "DELETE", CONFIGMAPS, params={"labelSelector": "x=1"})
    assert status == 200
    assert [c["metadata"]["name"] for c in body["items"]] == ["a"]
    _, listed = await call(http, "GET", CONFIGMAPS)
    assert [c["metadata"]["name"] for c in listed["items"]] == ["b"]


async def test_deleting_a_crd_removes_its_objects_and_its_resource(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    await call(http, "POST", WIDGETS, widget("w1"))
    await call(http, "POST", WIDGETS, widget("w2", finalizers=["hold"]))
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    await call(http, "DELETE", path)
    assert not await exists(http, f"{WIDGETS}/w1")
    assert await exists(http, path)  # w2's finalizer holds the CRD
    await call(http, "PATCH", f"{WIDGETS}/w2", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert not await exists(http, path)
    status, body = await call(http, "GET", WIDGETS)
    assert status == 404
    assert body["kind"] == "Status"
    status, _ = await call(http, "GET", "/apis/example.com/v1")
    assert status == 404
