"""Discovery, legacy and aggregated, and the OpenAPI documents: what kubectl and client-go read
to learn which groups, versions and resources the emulated API server serves."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from kubetune_localcluster.errors import unknown_resource
from kubetune_localcluster.objects import Object
from kubetune_localcluster.resources import CRD_STORAGE, Registry
from kubetune_localcluster.store import Store
from kubetune_localcluster.wire import accepts, dumps, json_response

KUBERNETES_VERSION = {"major": "1", "minor": "37"}
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version order: GA before beta before alpha, higher numbers first."""
    match = _VERSION.match(version)
    if match is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[match[2]]
    return (stage, -int(match[1]), -int(match[3] or 0), version)


def group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


class Discovery:
    """The discovery and OpenAPI endpoints of a registry (the OpenAPI documents are rebuilt
    only when a CRD changes)."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self._openapi_cache: tuple[tuple[str, ...], dict[str, dict[str, Any]]] | None = None

    def version(self) -> dict[str, Any]:
        return {
            **KUBERNETES_VERSION,
            "gitVersion": "v1.37.0-kubetune",
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "python",
            "compiler": "aiohttp",
            "platform": "linux/amd64",
        }

    def groups(self) -> list[tuple[str, list[str]]]:
        groups = self.registry.group_versions()
        return [
            (group, sorted(versions, key=version_priority))
            for group, versions in groups.items()
            if group
        ]

    def paths(self) -> list[str]:
        paths = ["/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"]
        for group, versions in self.groups():
            paths.append(f"/apis/{group}")
            paths.extend(f"/apis/{group}/{version}" for version in versions)
        return sorted(paths)

    def _aggregated_group(self, group: str, versions: list[str]) -> dict[str, Any]:
        return {
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [
                {
                    "version": version,
                    "resources": [
                        r.discovery_v2() for r in self.registry.resources(group, version)
                    ],
                    "freshness": "Current",
                }
                for version in versions
            ],
        }

    def _aggregated(self, items: list[dict[str, Any]]) -> web.Response:
        body = {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }
        response = web.Response(body=dumps(body))
        response.headers["Content-Type"] = AGGREGATED
        return response

    def core(self, request: web.Request) -> web.Response:
        if accepts(request, g="apidiscovery.k8s.io", v="v2", **{"as": "APIGroupDiscoveryList"}):
            return self._aggregated([self._aggregated_group("", ["v1"])])
        host = request.host
        return json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    def group_list(self, request: web.Request) -> web.Response:
        groups = self.groups()
        if accepts(request, g="apidiscovery.k8s.io", v="v2", **{"as": "APIGroupDiscoveryList"}):
            return self._aggregated([self._aggregated_group(g, vs) for g, vs in groups])
        return json_response(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [group_entry(group, versions) for group, versions in groups],
            }
        )

    def group(self, group: str) -> web.Response:
        for name, versions in self.groups():
            if name == group:
                return json_response(
                    {"kind": "APIGroup", "apiVersion": "v1", **group_entry(name, versions)}
                )
        raise unknown_resource()

    def resources(self, group: str, version: str) -> web.Response:
        resources = list(self.registry.resources(group, version))
        if not resources:
            raise unknown_resource()
        return json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": resources[0].group_version,
                "resources": [entry for r in resources for entry in r.api_resources()],
            }
        )

    def _crds(self) -> list[Object]:
        return list(self.store.objects(CRD_STORAGE, None))

    def openapi(self, parts: list[str]) -> web.Response:
        from kubetune_localcluster import openapi  # written beside this module

        if parts == ["v2"]:
            return json_response(openapi.openapi_v2(self._crds()))
        if parts[:1] != ["v3"]:
            raise unknown_resource()
        documents = self._openapi_documents()
        if len(parts) == 1:
            return json_response(openapi.openapi_v3_paths(list(documents), documents=documents))
        path = "/".join(parts[1:])
        group_version = "v1" if path == "api/v1" else path.removeprefix("apis/")
        if group_version not in documents or not path.startswith(("api/", "apis/")):
            raise unknown_resource()
        return json_response(documents[group_version])

    def _openapi_documents(self) -> dict[str, dict[str, Any]]:
        """The OpenAPI v3 document of every group/version, rebuilt when a CRD changes."""
        from kubetune_localcluster import openapi  # written beside this module

        crds = self._crds()
        key = tuple(c["metadata"]["resourceVersion"] for c in crds)
        if self._openapi_cache is not None and self._openapi_cache[0] == key:
            return self._openapi_cache[1]
        documents = {}
        for group, versions in [("", ["v1"]), *self.groups()]:
            for version in versions:
                group_version = f"{group}/{version}" if group else version
                kinds = [r.kind for r in self.registry.resources(group, version) if not r.custom]
                documents[group_version] = openapi.openapi_v3_document(group_version, kinds, crds)
        self._openapi_cache = (key, documents)
        return documents
