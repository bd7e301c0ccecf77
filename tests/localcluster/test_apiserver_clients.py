"""What clients see: discovery (legacy and aggregated), CRD registration, OpenAPI and Table
responses, CRD admission over HTTP, the `kubernetes` client and the real kubectl."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
import yaml

from kubetune_localcluster.apiserver import ApiServer
from kubetune_localcluster.discovery import AGGREGATED
from tests.localcluster.conftest import PODS, WIDGETS, call, pod, widget

KUBECTL = Path(".venv/bin/kubectl")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


async def test_version_and_legacy_discovery(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    _, version = await call(http, "GET", "/version")
    assert (version["major"], version["minor"]) == ("1", "37")
    _, api = await call(http, "GET", "/api")
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]
    _, core = await call(http, "GET", "/api/v1")
    entries = {r["name"]: r for r in core["resources"]}
    assert entries["pods"]["shortNames"] == ["po"]
    assert entries["pods"]["namespaced"]
    assert entries["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert entries["pods/log"]["verbs"] == ["get"]
    assert not entries["namespaces"]["namespaced"]
    _, groups = await call(http, "GET", "/apis")
    assert "example.com" in [g["name"] for g in groups["groups"]]
    _, group = await call(http, "GET", "/apis/example.com")
    assert group["kind"] == "APIGroup"
    assert group["preferredVersion"]["version"] == "v1"
    _, widgets = await call(http, "GET", "/apis/example.com/v1")
    entries = {r["name"]: r for r in widgets["resources"]}
    assert entries["widgets"] == {
        "name": "widgets",
        "singularName": "widget",
        "namespaced": True,
        "kind": "Widget",
        "verbs": [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        "shortNames": ["wd"],
        "categories": ["all", "gadgets"],
    }
    assert entries["widgets/status"]["kind"] == "Widget"


async def test_aggregated_discovery(http: aiohttp.ClientSession, crd: dict[str, Any]) -> None:
    accept = f"{AGGREGATED},application/json"
    async with http.get("/apis", headers={"Accept": accept}) as response:
        assert response.headers["Content-Type"] == AGGREGATED
        body = await response.json()
    assert body["kind"] == "APIGroupDiscoveryList"
    groups = {item["metadata"]["name"]: item for item in body["items"]}
    resource = groups["example.com"]["versions"][0]["resources"][0]
    assert resource["resource"] == "widgets"
    assert resource["scope"] == "Namespaced"
    assert resource["responseKind"] == {"group": "example.com", "version": "v1", "kind": "Widget"}
    assert resource["subresources"][0]["subresource"] == "status"


async def test_a_crd_is_established_with_its_names(crd: dict[str, Any]) -> None:
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["listKind"] == "WidgetList"
    assert crd["status"]["storedVersions"] == ["v1"]
    assert "customresourcecleanup.apiextensions.k8s.io" in crd["metadata"]["finalizers"]


async def test_custom_objects_are_admitted_through_the_schema(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    status, body = await call(http, "POST", WIDGETS, widget("w"))
    assert status == 201
    assert body["spec"]["color"] == "red"
    status, body = await call(
        http, "POST", WIDGETS, {**widget("bad"), "spec": {"size": 0, "color": "green"}}
    )
    assert status == 422
    assert body["reason"] == "Invalid"
    fields = sorted(c["field"] for c in body["details"]["causes"])
    assert fields == ["spec.color", "spec.size"]
    assert body["details"]["kind"] == "Widget"
    assert body["details"]["group"] == "example.com"
    status, body = await call(http, "POST", WIDGETS, {**widget("w2"), "spec": {}})
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "spec.size"
    status, body = await call(
        http,
        "PATCH",
        f"{WIDGETS}/w",
        {"spec": {"size": -1}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 422


async def test_field_validation_strict_warn_and_ignore(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    body = {**widget("w"), "spec": {"size": 1, "bogus": 1}}
    status, refused = await call(http, "POST", WIDGETS, body, params={"fieldValidation": "Strict"})
    assert status == 400
    assert 'unknown field "spec.bogus"' in refused["message"]
    async with http.post(WIDGETS, json=body, params={"fieldValidation": "Warn"}) as response:
        assert response.status == 201
        assert response.headers.getall("Warning") == ['299 - "unknown field \\"spec.bogus\\""']
        assert "bogus" not in (await response.json())["spec"]  # pruned
    status, _ = await call(
        http,
        "POST",
        WIDGETS,
        {**body, "metadata": {"name": "w3"}},
        params={"fieldValidation": "Ignore"},
    )
    assert status == 201
    status, refused = await call(
        http, "POST", WIDGETS, widget("w4"), params={"fieldValidation": "Loose"}
    )
    assert status == 400


async def test_unknown_fields_in_a_patch_are_invalid_at_the_patch_field(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    """Create and update answer a strict decoding error with 400; a patch with 422 and one
    cause at `patch`, as the API server's patcher does (kubectl apply shows that)."""
    await call(http, "POST", WIDGETS, widget("w"))
    status, body = await call(
        http,
        "PATCH",
        f"{WIDGETS}/w",
        {"spec": {"bogus": 1}},
        headers={"Content-Type": "application/merge-patch+json"},
        params={"fieldValidation": "Strict"},
    )
    assert status == 422
    assert body["reason"] == "Invalid"
    [cause] = body["details"]["causes"]
    assert cause["field"] == "patch"
    assert cause["reason"] == "FieldValueInvalid"
    assert cause["message"].startswith('Invalid value: "{\\"apiVersion\\":')
    assert cause["message"].endswith('strict decoding error: unknown field "spec.bogus"')
    assert body["message"] == f' "" is invalid: patch: {cause["message"]}'
    _, current = await call(http, "GET", f"{WIDGETS}/w")
    status, body = await call(
        http,
        "PUT",
        f"{WIDGETS}/w",
        {**current, "spec": {"size": 1, "bogus": 1}},
        params={"fieldValidation": "Strict"},
    )
    assert status == 400
    assert body["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.bogus"' in body["message"]


async def test_a_crd_without_printer_columns_shows_the_age(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    plain = copy.deepcopy(crd)
    plain["spec"]["versions"][0]["additionalPrinterColumns"] = []
    status, _ = await call(http, "PUT", f"{CRDS}/{crd['metadata']['name']}", plain)
    assert status == 200
    await call(http, "POST", WIDGETS, widget("w"))
    _, table = await call(http, "GET", WIDGETS, headers=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"][0] == "w"


async def test_table_responses(http: aiohttp.ClientSession, crd: dict[str, Any]) -> None:
    await call(http, "POST", WIDGETS, widget("w", 3))
    await call(http, "POST", PODS, pod("p"))
    _, table = await call(http, "GET", WIDGETS, headers=TABLE)
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase"]
    assert table["rows"][0]["cells"][:2] == ["w", 3]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["metadata"]["resourceVersion"]
    _, table = await call(http, "GET", f"{PODS}/p", headers=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Ready", "Status"]
    assert table["rows"][0]["cells"][2] == "Pending"


async def test_openapi_documents(http: aiohttp.ClientSession, crd: dict[str, Any]) -> None:
    _, index = await call(http, "GET", "/openapi/v3")
    assert {"api/v1", "apis/example.com/v1"} <= set(index["paths"])
    url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
    status, document = await call(http, "GET", url)
    assert status == 200
    kinds = [
        gvk["kind"]
        for schema in document["components"]["schemas"].values()
        for gvk in schema.get("x-kubernetes-group-version-kind", [])
    ]
    assert "Widget" in kinds
    status, v2 = await call(http, "GET", "/openapi/v2")
    assert status == 200
    assert v2["swagger"] == "2.0"
    status, _ = await call(http, "GET", "/openapi/v3/apis/nope.io/v1")
    assert status == 404


async def test_the_kubernetes_client(
    client: kubernetes.client.ApiClient, crd: dict[str, Any]
) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    created = await asyncio.to_thread(
        custom.create_namespaced_custom_object,
        "example.com",
        "v1",
        "default",
        "widgets",
        widget("w"),
    )
    assert created["metadata"]["name"] == "w"
    assert created["spec"]["color"] == "red"
    patched = await asyncio.to_thread(
        custom.patch_namespaced_custom_object_status,
        "example.com",
        "v1",
        "default",
        "widgets",
        "w",
        {"status": {"phase": "Up"}},
    )
    assert patched["status"] == {"phase": "Up"}
    await asyncio.to_thread(core.create_namespaced_pod, "default", pod("p", labels={"a": "b"}))
    listed = await asyncio.to_thread(core.list_namespaced_pod, "default", label_selector="a=b")
    assert [p.metadata.name for p in listed.items] == ["p"]
    patched_pod = await asyncio.to_thread(
        core.patch_namespaced_pod, "p", "default", {"metadata": {"labels": {"c": "d"}}}
    )
    assert patched_pod.metadata.labels == {"a": "b", "c": "d"}
    with pytest.raises(kubernetes.client.ApiException) as error:
        await asyncio.to_thread(core.read_namespaced_pod, "nope", "default")
    assert error.value.status == 404


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(kubeconfig.parent / "cache"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_kubectl_api_resources_apply_and_get(server: ApiServer, tmp_path: Path) -> None:
    from tests.localcluster.conftest import WIDGET_CRD

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
    code, out = await kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(WIDGET_CRD))
    assert code == 0, out
    code, out = await kubectl(kubeconfig, "api-resources")
    assert code == 0, out
    assert any(line.split()[:2] == ["widgets", "wd"] for line in out.splitlines())
    code, out = await kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(widget("w1", 3)))
    assert code == 0, out
    assert "widget.example.com/w1 created" in out
    code, out = await kubectl(
        kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(pod("p1", labels={"app": "x"}))
    )
    assert code == 0, out
    code, out = await kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(pod("p1", labels={"app": "x", "b": "c"})),
    )
    assert code == 0, out
    assert "pod/p1 configured" in out
    code, out = await kubectl(kubeconfig, "get", "pods", "-l", "app=x")
    assert code == 0, out
    assert out.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out.splitlines()[1].split()[:3] == ["p1", "0/1", "Pending"]
    code, out = await kubectl(kubeconfig, "get", "wd")
    assert out.splitlines()[0].split() == ["NAME", "SIZE", "PHASE"], out
    assert out.splitlines()[1].split() == ["w1", "3"]
    code, out = await kubectl(kubeconfig, "get", "widget", "w1", "-o", "jsonpath={.spec.size}")
    assert (code, out) == (0, "3")
    code, out = await kubectl(kubeconfig, "delete", "pod", "p1")
    assert code == 0, out
    assert 'pod "p1" deleted' in out
