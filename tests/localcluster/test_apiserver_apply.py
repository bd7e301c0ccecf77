"""Server-side apply over HTTP (PATCH with application/apply-patch+yaml): a missing object is
created (201, built-in and custom, namespaced and cluster-scoped, admitted as a create is), an
existing one is merged, managedFields record each field manager, a field a manager stops
applying is removed unless another manager owns it, and a re-apply of the same configuration
changes nothing. What kubectl apply --server-side does is in test_kubectl.py."""

from __future__ import annotations

from typing import Any

import aiohttp
import yaml

from kubetune_localcluster.apiserver import ApiServer
from tests.localcluster.conftest import WIDGETS, call

APPLY = {"Content-Type": "application/apply-patch+yaml"}
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def apply(
    http: aiohttp.ClientSession,
    path: str,
    config: dict[str, Any] | str,
    manager: str | None = "tester",
    **params: str,
) -> tuple[int, Any]:
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    query = {**({"fieldManager": manager} if manager else {}), **params}
    async with http.patch(path, data=text, headers=APPLY, params=query) as response:
        return response.status, await response.json()


def config_map(name: str, data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **metadata},
        "data": data,
    }


async def test_apply_creates_a_missing_object_and_records_its_manager(
    http: aiohttp.ClientSession,
) -> None:
    status, created = await apply(
        http, f"{CONFIGMAPS}/c", config_map("c", {"a": "1"}, labels={"x": "y"})
    )
    assert status == 201, created
    assert created["data"] == {"a": "1"}
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert len(meta["uid"]) == 36
    [entry] = meta["managedFields"]
    assert entry["manager"] == "tester"
    assert entry["operation"] == "Apply"
    assert entry["apiVersion"] == "v1"
    assert entry["fieldsType"] == "FieldsV1"
    assert entry["time"].endswith("Z")
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}
    status, got = await call(http, "GET", f"{CONFIGMAPS}/c")
    assert (status, got) == (200, created)


async def test_a_second_apply_of_the_same_configuration_changes_nothing(
    http: aiohttp.ClientSession,
) -> None:
    document = config_map("c", {"a": "1"})
    _, first = await apply(http, f"{CONFIGMAPS}/c", document)
    status, second = await apply(http, f"{CONFIGMAPS}/c", document, force="true")
    assert status == 200
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert second == first


async def test_apply_merges_and_removes_only_what_the_manager_stopped_applying(
    http: aiohttp.ClientSession,
) -> None:
    path = f"{CONFIGMAPS}/c"
    await apply(http, path, config_map("c", {"a": "1", "b": "2"}, labels={"x": "y"}), "one")
    _, merged = await apply(http, path, config_map("c", {"c": "3"}), "two")
    assert merged["data"] == {"a": "1", "b": "2", "c": "3"}
    assert [e["manager"] for e in merged["metadata"]["managedFields"]] == ["one", "two"]
    # A plain merge patch (no owner recorded) keeps the managers.
    status, patched = await call(
        http,
        "PATCH",
        path,
        {"data": {"d": "4"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 200
    assert len(patched["metadata"]["managedFields"]) == 2
    # "one" stops applying b and the label, and takes over c: b and the label go, c stays.
    status, applied = await apply(http, path, config_map("c", {"a": "10", "c": "3"}), "one")
    assert status == 200
    assert applied["data"] == {"a": "10", "c": "3", "d": "4"}
    assert "labels" not in applied["metadata"]
    # "two" stops applying c, still owned by "one": it stays.
    _, applied = await apply(http, path, config_map("c", {}), "two")
    assert applied["data"] == {"a": "10", "c": "3", "d": "4"}
    assert [e["manager"] for e in applied["metadata"]["managedFields"]] == ["one", "two"]


async def test_apply_creates_cluster_scoped_and_custom_objects_through_admission(
    server: ApiServer, http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    status, created = await apply(http, "/api/v1/namespaces/team-a", namespace)
    assert status == 201, created
    assert created["status"] == {"phase": "Active"}
    assert server.store.get("/serviceaccounts", "team-a", "default") is not None

    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    status, invalid = await apply(http, f"{WIDGETS}/w", {**widget, "spec": {}})
    assert (status, invalid["reason"]) == (422, "Invalid")
    assert invalid["details"]["causes"][0]["field"] == "spec.size"
    status, created = await apply(
        http, f"{WIDGETS}/w", {**widget, "spec": {"size": 2}, "status": {"phase": "Up"}}
    )
    assert status == 201, created
    assert created["spec"] == {"size": 2, "color": "red"}  # the schema's default
    assert "status" not in created  # a status subresource: not written by a main write
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:size": {}}}
    status, unknown = await apply(
        http,
        f"{WIDGETS}/w",
        {**widget, "spec": {"size": 2, "shape": "round"}},
        fieldValidation="Strict",
    )
    assert (status, unknown["reason"]) == (400, "BadRequest")
    assert 'unknown field "spec.shape"' in unknown["message"]

    # The status subresource, applied by another manager, and recorded apart.
    status, applied = await apply(
        http, f"{WIDGETS}/w/status", {**widget, "status": {"phase": "Up"}}, "controller"
    )
    assert status == 200, applied
    assert applied["status"] == {"phase": "Up"}
    assert applied["metadata"]["generation"] == 1
    entries = {e["manager"]: e for e in applied["metadata"]["managedFields"]}
    assert entries["controller"]["subresource"] == "status"
    assert entries["controller"]["fieldsV1"] == {"f:status": {"f:phase": {}}}
    assert "subresource" not in entries["tester"]
    nope = {**widget, "metadata": {"name": "nope"}, "status": {}}
    status, missing = await apply(http, f"{WIDGETS}/nope/status", nope)
    assert status == 404, missing


async def test_apply_with_a_dry_run_stores_nothing(
    server: ApiServer, http: aiohttp.ClientSession
) -> None:
    status, created = await apply(
        http, f"{CONFIGMAPS}/c", config_map("c", {"a": "1"}), dryRun="All"
    )
    assert status == 201
    assert created["data"] == {"a": "1"}
    assert server.store.get("/configmaps", "default", "c") is None


async def test_apply_refuses_what_the_api_server_refuses(http: aiohttp.ClientSession) -> None:
    path = f"{CONFIGMAPS}/c"
    status, body = await apply(http, path, config_map("c", {}), manager=None)
    assert (status, body["reason"]) == (422, "Invalid")
    assert "fieldManager: Required value: is required for apply patch" in body["message"]
    status, body = await apply(http, path, {"metadata": {"name": "c"}})
    assert (status, body["reason"]) == (400, "BadRequest")  # no apiVersion and kind
    status, body = await apply(http, path, {**config_map("c", {}), "kind": "Secret"})
    assert status == 400
    status, body = await apply(http, path, config_map("other", {}))
    assert status == 400
    assert "does not match the name on the URL" in body["message"]
    status, body = await apply(http, path, "data: [unclosed")
    assert status == 400
    status, body = await apply(http, "/api/v1/namespaces/nope/configmaps/c", config_map("c", {}))
    assert (status, body["message"]) == (404, 'namespaces "nope" not found')
