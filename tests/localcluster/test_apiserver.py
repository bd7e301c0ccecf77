"""The API server emulator over HTTP: object metadata, reads, writes, patches, the status
subresource, selectors, lists, errors and events, as a real API server answers them."""

from __future__ import annotations

from typing import Any

import aiohttp

from kubetune_localcluster.apiserver import ApiServer
from tests.localcluster.conftest import PODS, WIDGETS, call, pod, widget

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


async def test_create_sets_uid_timestamp_generation_and_one_version_counter(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    status, first = await call(http, "POST", PODS, pod("a"))
    assert status == 201
    meta = first["metadata"]
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    status, second = await call(http, "POST", WIDGETS, widget("w"))
    assert status == 201
    # One counter for every resource: a widget written after a pod has a later version.
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, config = await call(
        http,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "c"}, "data": {"k": "v"}},
    )
    assert status == 201
    assert "generation" not in config["metadata"]
    assert int(config["metadata"]["resourceVersion"]) > int(second["metadata"]["resourceVersion"])


async def test_generate_name_and_already_exists(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", PODS, pod("", generateName="trial-"))
    assert status == 201
    assert body["metadata"]["name"].startswith("trial-")
    assert len(body["metadata"]["name"]) == 11
    status, body = await call(http, "POST", PODS, pod(body["metadata"]["name"]))
    assert status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["kind"] == "Status"
    assert body["details"]["name"].startswith("trial-")


async def test_pods_get_defaults_and_a_pending_status(http: aiohttp.ClientSession) -> None:
    _, body = await call(http, "POST", PODS, {**pod("a"), "status": {"phase": "Running"}})
    assert body["status"]["phase"] == "Pending"
    assert body["status"]["qosClass"] == "BestEffort"
    container = body["spec"]["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert body["spec"]["restartPolicy"] == "Always"


async def test_a_pod_asking_only_for_a_gpu_is_best_effort_from_its_creation(
    http: aiohttp.ClientSession,
) -> None:
    # Kubernetes classes pods by cpu and memory only: the kubelet must not rewrite it later.
    gpu_only = pod("gpu")
    gpu_only["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    status, body = await call(http, "POST", PODS, gpu_only)
    assert status == 201
    assert body["status"]["qosClass"] == "BestEffort"


async def test_a_pod_with_a_quantity_that_does_not_parse_is_invalid(
    http: aiohttp.ClientSession,
) -> None:
    bad = pod("bad")
    bad["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "lots"}}
    status, body = await call(http, "POST", PODS, bad)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert "is not a Kubernetes quantity" in body["message"]


async def test_cheap_validation_of_builtin_objects(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", PODS, {"metadata": {"name": "a"}, "spec": {}})
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.containers"
    status, body = await call(http, "POST", PODS, pod("Bad_Name"))
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    status, body = await call(http, "POST", PODS, {"metadata": {}, "spec": pod("x")["spec"]})
    assert status == 422
    assert "name or generateName is required" in body["message"]


async def test_create_in_a_missing_namespace_is_not_found(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", "/api/v1/namespaces/nope/pods", pod("a"))
    assert status == 404
    assert body["message"] == 'namespaces "nope" not found'


async def test_get_list_and_not_found(http: aiohttp.ClientSession) -> None:
    for name in ("b", "a"):
        await call(http, "POST", PODS, pod(name))
    status, body = await call(http, "GET", f"{PODS}/a")
    assert status == 200
    assert body["kind"] == "Pod"
    assert body["apiVersion"] == "v1"
    status, listed = await call(http, "GET", PODS)
    assert listed["kind"] == "PodList"
    assert listed["apiVersion"] == "v1"
    assert [p["metadata"]["name"] for p in listed["items"]] == ["a", "b"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(body["metadata"]["resourceVersion"])
    status, body = await call(http, "GET", f"{PODS}/zzz")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "zzz" not found',
        "reason": "NotFound",
        "details": {"name": "zzz", "group": "", "kind": "pods"},
        "code": 404,
    }


async def test_list_pages_with_limit_and_continue(http: aiohttp.ClientSession) -> None:
    for i in range(5):
        await call(
            http, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}}
        )
    _, page = await call(
        http, "GET", "/api/v1/namespaces/default/configmaps", params={"limit": "3"}
    )
    assert [c["metadata"]["name"] for c in page["items"]] == ["c0", "c1", "c2"]
    assert page["metadata"]["remainingItemCount"] == 2
    _, rest = await call(
        http,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        params={"limit": "3", "continue": page["metadata"]["continue"]},
    )
    assert [c["metadata"]["name"] for c in rest["items"]] == ["c3", "c4"]
    assert "continue" not in rest["metadata"]


async def test_label_and_field_selectors_on_list(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("a", labels={"app": "x", "tier": "web"}))
    await call(http, "POST", PODS, pod("b", labels={"app": "y"}))
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    await call(http, "POST", "/api/v1/namespaces/other/pods", pod("c", labels={"app": "x"}))
    await call(http, "PATCH", f"{PODS}/b/status", {"status": {"phase": "Running"}}, headers=MERGE)
    await call(http, "PATCH", f"{PODS}/a", {"spec": {"nodeName": "n1"}}, headers=MERGE)

    async def names(path: str, **params: str) -> list[str]:
        status, body = await call(http, "GET", path, params=params)
        assert status == 200, body
        return [p["metadata"]["name"] for p in body["items"]]

    assert await names("/api/v1/pods", labelSelector="app=x") == ["a", "c"]
    assert await names(PODS, labelSelector="app==x") == ["a"]
    assert await names("/api/v1/pods", labelSelector="app!=x") == ["b"]
    assert await names("/api/v1/pods", labelSelector="app in (x,y),!tier") == ["b", "c"]
    assert await names("/api/v1/pods", labelSelector="app notin (x)") == ["b"]
    assert await names("/api/v1/pods", labelSelector="tier") == ["a"]
    assert await names("/api/v1/pods", fieldSelector="status.phase=Running") == ["b"]
    assert await names("/api/v1/pods", fieldSelector="metadata.namespace=other") == ["c"]
    assert await names("/api/v1/pods", fieldSelector="metadata.name=b") == ["b"]
    assert await names("/api/v1/pods", fieldSelector="spec.nodeName=n1") == ["a"]
    assert await names("/api/v1/pods", fieldSelector="spec.nodeName=") == ["b", "c"]
    status, body = await call(http, "GET", PODS, params={"fieldSelector": "spec.image=x"})
    assert status == 400
    assert body["reason"] == "BadRequest"
    status, body = await call(http, "GET", PODS, params={"labelSelector": "app in ()"})
    assert status == 400


async def test_put_replaces_with_a_resource_version_precondition(
    http: aiohttp.ClientSession,
) -> None:
    _, created = await call(
        http,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "c"}, "data": {"k": "1"}},
    )
    path = "/api/v1/namespaces/default/configmaps/c"
    status, replaced = await call(http, "PUT", path, {**created, "data": {"k": "2"}})
    assert status == 200
    assert replaced["data"] == {"k": "2"}
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    status, body = await call(http, "PUT", path, {**created, "data": {"k": "3"}})
    assert status == 409
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    # Without a resourceVersion a built-in object is replaced unconditionally.
    stale = {"metadata": {"name": "c"}, "data": {"k": "4"}}
    status, body = await call(http, "PUT", path, stale)
    assert status == 200
    assert body["data"] == {"k": "4"}
    status, body = await call(http, "PUT", path, {"metadata": {"name": "d"}})
    assert status == 400
    status, body = await call(
        http, "PUT", "/api/v1/namespaces/default/configmaps/nope", {"metadata": {"name": "nope"}}
    )
    assert status == 404


async def test_a_noop_write_changes_no_version(http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", PODS, pod("a", labels={"k": "v"}))
    status, body = await call(
        http, "PATCH", f"{PODS}/a", {"metadata": {"labels": {"k": "v"}}}, headers=MERGE
    )
    assert status == 200
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_generation_moves_with_spec_changes_only(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    await call(http, "POST", WIDGETS, widget("w"))
    _, body = await call(
        http, "PATCH", f"{WIDGETS}/w", {"metadata": {"labels": {"a": "b"}}}, headers=MERGE
    )
    assert body["metadata"]["generation"] == 1
    _, body = await call(
        http, "PATCH", f"{WIDGETS}/w/status", {"status": {"phase": "Up"}}, headers=MERGE
    )
    assert body["metadata"]["generation"] == 1
    assert body["status"] == {"phase": "Up"}
    _, body = await call(http, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}}, headers=MERGE)
    assert body["metadata"]["generation"] == 2


async def test_status_subresource_writes_ignore_spec_and_main_writes_ignore_status(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, created = await call(http, "POST", WIDGETS, {**widget("w"), "status": {"phase": "X"}})
    assert "status" not in created  # dropped on create when status is a subresource
    _, body = await call(
        http,
        "PATCH",
        f"{WIDGETS}/w/status",
        {"spec": {"size": 9}, "status": {"phase": "Up"}, "metadata": {"labels": {"x": "y"}}},
        headers=MERGE,
    )
    assert body["spec"]["size"] == 1
    assert body["status"]["phase"] == "Up"
    assert "labels" not in body["metadata"]
    _, body = await call(
        http,
        "PATCH",
        f"{WIDGETS}/w",
        {"spec": {"size": 3}, "status": {"phase": "Down"}},
        headers=MERGE,
    )
    assert body["spec"]["size"] == 3
    assert body["status"]["phase"] == "Up"
    status, got = await call(http, "GET", f"{WIDGETS}/w/status")
    assert status == 200
    assert got["status"]["phase"] == "Up"
    status, put = await call(
        http, "PUT", f"{WIDGETS}/w/status", {**got, "status": {"phase": "Gone", "count": 1}}
    )
    assert status == 200
    assert put["status"] == {"phase": "Gone", "count": 1}
    assert put["metadata"]["generation"] == 2


async def test_pod_status_subresource(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("a"))
    status, body = await call(
        http,
        "PATCH",
        f"{PODS}/a/status",
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        headers=STRATEGIC,
    )
    assert status == 200
    assert body["status"]["phase"] == "Running"
    _, body = await call(
        http,
        "PATCH",
        f"{PODS}/a/status",
        {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}},
        headers=STRATEGIC,
    )
    assert [c["type"] for c in body["status"]["conditions"]] == ["Ready", "PodScheduled"]
    _, body = await call(http, "PATCH", f"{PODS}/a", {"status": {"phase": "Failed"}}, headers=MERGE)
    assert body["status"]["phase"] == "Running"


async def test_custom_object_put_needs_a_resource_version(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    await call(http, "POST", WIDGETS, widget("w"))
    status, body = await call(http, "PUT", f"{WIDGETS}/w", widget("w", 2))
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "metadata.resourceVersion"


async def test_merge_patch_with_a_stale_resource_version_conflicts(
    http: aiohttp.ClientSession,
) -> None:
    _, created = await call(http, "POST", PODS, pod("a"))
    version = created["metadata"]["resourceVersion"]
    status, _ = await call(
        http,
        "PATCH",
        f"{PODS}/a",
        {"metadata": {"resourceVersion": version, "labels": {"a": "1"}}},
        headers=MERGE,
    )
    assert status == 200
    status, body = await call(
        http,
        "PATCH",
        f"{PODS}/a",
        {"metadata": {"resourceVersion": version, "labels": {"a": "2"}}},
        headers=MERGE,
    )
    assert status == 409
    assert body["reason"] == "Conflict"


async def test_kopfs_first_json_patch_succeeds_and_a_stale_one_fails(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, created = await call(http, "POST", WIDGETS, widget("w"))
    version = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {
            "op": "add",
            "path": "/metadata/finalizers",
            "value": ["kopf.zalando.org/KopfFinalizerMarker"],
        },
    ]
    status, body = await call(http, "PATCH", f"{WIDGETS}/w", ops, headers=JSON_PATCH)
    assert status == 200, body
    assert body["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    status, body = await call(http, "PATCH", f"{WIDGETS}/w", ops, headers=JSON_PATCH)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["kind"] == "Status"


async def test_patch_types_the_server_refuses(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    await call(http, "POST", WIDGETS, widget("w"))
    status, body = await call(
        http, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}}, headers=STRATEGIC
    )
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert "application/strategic-merge-patch+json" not in body["message"]
    assert "application/apply-patch+yaml" in body["message"]
    for media in ("application/json", "text/plain", "application/apply-patch+cbor"):
        async with http.patch(
            f"{WIDGETS}/w", data='{"spec": {"size": 2}}', headers={"Content-Type": media}
        ) as response:
            body = await response.json()
        assert (response.status, body["reason"]) == (415, "UnsupportedMediaType"), media
    status, body = await call(http, "PATCH", f"{WIDGETS}/nope", {"spec": {}}, headers=MERGE)
    assert status == 404
    async with http.patch(f"{WIDGETS}/w", data="{", headers=MERGE) as response:
        assert response.status == 400


async def test_strategic_merge_patch_on_a_pod(http: aiohttp.ClientSession) -> None:
    body = pod("a")
    body["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    await call(http, "POST", PODS, body)
    _, patched = await call(
        http,
        "PATCH",
        f"{PODS}/a",
        {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}},
        headers=STRATEGIC,
    )
    container = patched["spec"]["containers"][0]
    assert container["image"] == "busybox"
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


async def test_dry_run_stores_nothing(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", PODS, pod("a"), params={"dryRun": "All"})
    assert status == 201
    assert body["metadata"]["name"] == "a"
    status, _ = await call(http, "GET", f"{PODS}/a")
    assert status == 404


async def test_status_bodies_for_unknown_paths_and_methods(http: aiohttp.ClientSession) -> None:
    for path in (
        "/nope",
        "/api/v2",
        "/api/v1/widgets",
        "/apis/example.com/v1/widgets",
        "/api/v1/namespaces/default/pods/a/b/c",
        "/api/v1/pods/a/status",
    ):
        status, body = await call(http, "GET", path)
        assert status == 404, path
        assert (body["kind"], body["apiVersion"], body["status"], body["code"]) == (
            "Status",
            "v1",
            "Failure",
            404,
        )
    status, body = await call(http, "POST", f"{PODS}/a")
    assert status == 405
    assert body["reason"] == "MethodNotAllowed"
    status, body = await call(http, "POST", PODS, ["not", "an", "object"])
    assert status == 400
    assert body["reason"] == "BadRequest"


async def test_events_in_both_groups(http: aiohttp.ClientSession) -> None:
    status, core = await call(
        http,
        "POST",
        "/api/v1/namespaces/default/events",
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "a", "namespace": "default", "uid": "u"},
            "reason": "Started",
            "message": "started",
            "type": "Normal",
            "source": {"component": "kubelet"},
        },
    )
    assert status == 201
    assert core["kind"] == "Event"
    status, new = await call(
        http,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Pod", "name": "a"},
            "reason": "Pulled",
            "note": "pulled",
            "type": "Normal",
            "action": "Pull",
            "reportingController": "kubelet",
            "reportingInstance": "n1",
            "eventTime": "2026-01-01T00:00:00.000000Z",
        },
    )
    assert status == 201
    assert new["apiVersion"] == "events.k8s.io/v1"
    _, listed = await call(
        http,
        "GET",
        "/api/v1/events",
        params={"fieldSelector": "involvedObject.name=a,involvedObject.uid=u,source=kubelet"},
    )
    assert [e["metadata"]["name"] for e in listed["items"]] == ["e1"]
    _, listed = await call(
        http,
        "GET",
        "/apis/events.k8s.io/v1/events",
        params={"fieldSelector": "regarding.name=a,reason=Pulled"},
    )
    assert [e["metadata"]["name"] for e in listed["items"]] == ["e2"]


async def test_pod_binding_and_logs(server: ApiServer, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("a"))
    status, body = await call(http, "GET", f"{PODS}/a/log")
    assert status == 404
    assert body["kind"] == "Status"
    server.set_pod_log_provider(
        lambda ns, name, container: f"{ns}/{name}/{container}\nline 2\n" if name == "a" else None
    )
    async with http.get(f"{PODS}/a/log", params={"container": "main"}) as response:
        assert response.status == 200
        assert await response.text() == "default/a/main\nline 2\n"
    async with http.get(f"{PODS}/a/log", params={"tailLines": "1"}) as response:
        assert await response.text() == "line 2\n"
    status, body = await call(http, "GET", f"{PODS}/a/log", params={"container": "zzz"})
    assert status == 400
    status, _ = await call(
        http,
        "POST",
        f"{PODS}/a/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "a"},
            "target": {"kind": "Node", "name": "node-1"},
        },
    )
    assert status == 201
    _, body = await call(http, "GET", f"{PODS}/a")
    assert body["spec"]["nodeName"] == "node-1"
    assert body["status"]["conditions"][0]["type"] == "PodScheduled"
    status, _ = await call(http, "POST", f"{PODS}/a/binding", {"target": {"name": "node-2"}})
    assert status == 409
