"""The OpenAPI documents (kubetune_localcluster.openapi), down to the real kubectl: `kubectl
explain` walks them and `kubectl apply` finds server-side field validation in them. A small
aiohttp server serves just discovery, the documents and a create, so these tests do not depend
on the API server module."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from kubetune_localcluster.admission import admit
from kubetune_localcluster.builtin_schemas import BUILTIN_SCHEMAS, builtin_subset
from kubetune_localcluster.field_errors import InvalidObject, invalid_status
from kubetune_localcluster.openapi import (
    definition_name,
    document_hash,
    openapi_v2,
    openapi_v3_document,
    openapi_v3_paths,
)

ROOT = Path(__file__).resolve().parents[2]
STUDY_CRD = yaml.safe_load((ROOT / "crds" / "tuningstudies.kubetune.io.yaml").read_text())
KUBECTL = Path(sys.executable).with_name("kubectl")
STUDY = "io.kubetune.v1alpha1.TuningStudy"


def test_the_shipped_builtin_schemas_are_kubernetes_validates() -> None:
    source = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema/v1.37.0-local/_definitions.json"
    )
    expected = builtin_subset(json.loads(source.read_text())["$defs"])
    with gzip.open(BUILTIN_SCHEMAS, "rt") as handle:
        assert json.load(handle) == expected, "regenerate builtin-schemas.json.gz"
    assert "io.k8s.api.core.v1.PodSpec" in expected


def test_a_crd_document_has_the_kind_its_list_and_object_meta() -> None:
    document = openapi_v3_document("apis/kubetune.io/v1alpha1", [], [STUDY_CRD])
    schemas = document["components"]["schemas"]
    assert definition_name("kubetune.io", "v1alpha1", "TuningStudy") == STUDY
    study = schemas[STUDY]
    assert study["x-kubernetes-group-version-kind"] == [
        {"group": "kubetune.io", "kind": "TuningStudy", "version": "v1alpha1"}
    ]
    assert study["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert (
        study["properties"]["spec"]["properties"]["budget"]["properties"]["parallelism"]["minimum"]
        == 0
    )
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert schemas[STUDY + "List"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/" + STUDY
    }
    patch = document["paths"][
        "/apis/kubetune.io/v1alpha1/namespaces/{namespace}/tuningstudies/{name}"
    ]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "TuningStudy"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_a_custom_kind_has_no_strategic_merge_patch() -> None:
    """kubectl apply picks its patch type from these: a strategic merge patch, which the API
    server refuses for custom objects (415), only where the server lists it."""
    custom = openapi_v3_document("apis/kubetune.io/v1alpha1", [], [STUDY_CRD])
    item = "/apis/kubetune.io/v1alpha1/namespaces/{namespace}/tuningstudies/{name}"
    assert list(custom["paths"][item]["patch"]["requestBody"]["content"]) == [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ]
    builtin = openapi_v3_document("v1", ["Pod"], [])
    pod_patch = builtin["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in pod_patch["requestBody"]["content"]
    v2 = openapi_v2([STUDY_CRD])["paths"]
    assert "application/strategic-merge-patch+json" not in v2[item]["patch"]["consumes"]
    assert (
        "application/strategic-merge-patch+json"
        in (v2["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["consumes"])
    )


def test_builtin_kinds_are_plain_openapi() -> None:
    document = openapi_v3_document("v1", ["Pod", "Namespace"], [])
    schemas = document["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["type"] == "object"
    assert "enum" not in pod["properties"]["kind"]
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        "type": "string",
        "format": "int-or-string",
    }
    assert "/api/v1/namespaces/{name}" in document["paths"]
    assert "$defs" not in json.dumps(document)


def test_the_index_hashes_change_with_the_documents() -> None:
    documents = {"v1": {"a": 1}, "kubetune.io/v1alpha1": {"b": 2}}
    index = openapi_v3_paths(list(documents), documents=documents)["paths"]
    assert set(index) == {"api/v1", "apis/kubetune.io/v1alpha1"}
    assert (
        index["api/v1"]["serverRelativeURL"] == f"/openapi/v3/api/v1?hash={document_hash({'a': 1})}"
    )
    changed = openapi_v3_paths(["v1"], documents={"v1": {"a": 2}})["paths"]["api/v1"]
    assert changed != index["api/v1"]


def test_v2_has_definitions_without_v3_only_keywords() -> None:
    document = openapi_v2([STUDY_CRD])
    assert document["swagger"] == "2.0"
    assert '"nullable"' not in json.dumps(document["definitions"][STUDY])
    assert "#/components/" not in json.dumps(document)
    assert document["definitions"][STUDY]["properties"]["metadata"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "description": document["definitions"][STUDY]["properties"]["metadata"]["description"],
    }
    assert "io.k8s.api.core.v1.Pod" in document["definitions"]


# --- the real kubectl ------------------------------------------------------------------------

STATUS_404 = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
              "code": 404, "message": "not found"}  # fmt: skip
STUDY_SCHEMA = STUDY_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


class TinyServer:
    """Discovery, the OpenAPI documents and TuningStudy create: what kubectl explain and apply
    read, nothing more."""

    def __init__(self) -> None:
        self.documents = {
            "v1": openapi_v3_document("v1", ["Pod", "Namespace"], []),
            "kubetune.io/v1alpha1": openapi_v3_document("kubetune.io/v1alpha1", [], [STUDY_CRD]),
        }
        self.requests: list[str] = []

    def routes(self) -> dict[str, Any]:
        resource = {"name": "tuningstudies", "singularName": "tuningstudy", "namespaced": True,
                    "kind": "TuningStudy", "verbs": ["create", "get", "list", "patch"],
                    "shortNames": ["ts"]}  # fmt: skip
        pods = {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                "verbs": ["get", "list"]}  # fmt: skip
        group = {"groupVersion": "kubetune.io/v1alpha1", "version": "v1alpha1"}
        routes: dict[str, Any] = {
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "kubetune.io", "versions": [group], "preferredVersion": group}]},
            "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [pods]},
            "/apis/kubetune.io/v1alpha1": {"kind": "APIResourceList", "apiVersion": "v1",
                                           "groupVersion": "kubetune.io/v1alpha1",
                                           "resources": [resource]},
            "/openapi/v3": openapi_v3_paths(list(self.documents), documents=self.documents),
            "/openapi/v3/api/v1": self.documents["v1"],
            "/openapi/v3/apis/kubetune.io/v1alpha1": self.documents["kubetune.io/v1alpha1"],
        }  # fmt: skip
        return routes

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path_qs}")
        routes = self.routes()
        if request.method == "GET" and request.path in routes:
            return web.json_response(routes[request.path])
        if request.method == "POST" and request.path.endswith("/tuningstudies"):
            validation = request.query.get("fieldValidation", "Warn")
            try:
                admitted, _warnings = admit(STUDY_SCHEMA, await request.json(), None,
                                           field_validation=validation)  # fmt: skip
            except InvalidObject as error:
                body = invalid_status("TuningStudy", "kubetune.io", "x", error)
                return web.json_response(body, status=body["code"])
            return web.json_response(admitted, status=201)
        return web.json_response(STATUS_404, status=404)


@pytest.fixture
async def kubeconfig(tmp_path: Path) -> AsyncIterator[tuple[Path, TinyServer]]:
    server = TinyServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield path, server
    finally:
        await runner.cleanup()


async def kubectl(config: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(config.parent)}
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_kubectl_explain_walks_the_crd_and_builtin_schemas(
    kubeconfig: tuple[Path, TinyServer],
) -> None:
    config, _ = kubeconfig
    code, output = await kubectl(config, "explain", "tuningstudy.spec")
    assert code == 0, output
    assert "KIND:       TuningStudy" in output
    assert "FIELD: spec <Object>" in output
    assert "searchSpace\t<[]Object> -required-" in output
    code, output = await kubectl(config, "explain", "tuningstudy.spec.budget.parallelism")
    assert code == 0, output
    assert "FIELD: parallelism <integer>" in output
    assert "Trials that may run at the same time." in output
    code, output = await kubectl(config, "explain", "pods.spec.containers.resources")
    assert code == 0, output
    assert "FIELD: resources <ResourceRequirements>" in output


async def test_kubectl_apply_leaves_validation_to_the_server(
    kubeconfig: tuple[Path, TinyServer], tmp_path: Path
) -> None:
    config, server = kubeconfig
    study = yaml.safe_load((ROOT / "examples" / "synthetic-quadratic.yaml").read_text())
    study["spec"]["budget"]["paralelism"] = 2
    manifest = tmp_path / "study.json"  # JSON: kubectl reads YAML 1.1, where `name: y` is true
    manifest.write_text(json.dumps(study))
    code, output = await kubectl(config, "create", "-f", str(manifest))
    assert code == 1
    assert 'strict decoding error: unknown field "spec.budget.paralelism"' in output
    assert any("fieldValidation=Strict" in r for r in server.requests if r.startswith("POST"))
    del study["spec"]["budget"]["paralelism"]
    manifest.write_text(json.dumps(study))
    code, output = await kubectl(config, "create", "-f", str(manifest))
    assert code == 0, output
    assert "tuningstudy.kubetune.io/synthetic-quadratic created" in output
