"""The resources the API server emulator serves: the built-in kinds and those CRDs register.

A `Resource` is one group/version/plural as discovery shows it; `Registry` finds one by URL
or by kind, lists groups for discovery, and turns a CustomResourceDefinition into resources.
Objects of a resource live under its `storage` key (group/plural), shared by its versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
# Field selectors every resource supports.
META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
POD_FIELDS = META_FIELDS | {
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
}
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
CORE_EVENT_FIELDS = (
    META_FIELDS
    | {f"involvedObject.{name}" for name in _INVOLVED}
    | {"reason", "reportingComponent", "source", "type"}
)
EVENT_FIELDS = (
    META_FIELDS
    | {f"regarding.{name}" for name in _INVOLVED}
    | {"reason", "reportingController", "type"}
)


@dataclass(frozen=True)
class Resource:
    """One served group/version/plural."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "log", "binding", "finalize"
    verbs: tuple[str, ...] = ALL_VERBS
    field_labels: frozenset[str] = META_FIELDS
    # Whether metadata.generation is kept (kinds with a spec that controllers observe).
    has_generation: bool = False
    custom: bool = False  # served from a CRD
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: list[dict[str, Any]] | None = field(default=None, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def group_resource(self) -> str:
        """How error messages name the resource: "pods", "tuningstudies.kubetune.io"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def api_resources(self) -> list[dict[str, Any]]:
        """The APIResourceList entries: the resource itself, then its subresources."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        for sub in self.subresources:
            kind, verbs = self.subresource_kind_verbs(sub)
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": kind,
                    "verbs": list(verbs),
                }
            )
        return entries

    def subresource_kind_verbs(self, sub: str) -> tuple[str, tuple[str, ...]]:
        if sub == "log":
            return self.kind, ("get",)
        if sub == "binding":
            return "Binding", ("create",)
        if sub == "finalize":
            return self.kind, ("update",)
        return self.kind, SUBRESOURCE_VERBS

    def discovery_v2(self) -> dict[str, Any]:
        """The aggregated discovery (apidiscovery.k8s.io/v2) entry of this resource."""
        gvk = {"group": self.group, "version": self.version}
        entry: dict[str, Any] = {
            "resource": self.plural,
            "responseKind": {**gvk, "kind": self.kind},
            "scope": "Namespaced" if self.namespaced else "Cluster",
            "singularResource": self.singular,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        if self.subresources:
            entry["subresources"] = [
                {
                    "subresource": sub,
                    "responseKind": {**gvk, "kind": self.subresource_kind_verbs(sub)[0]},
                    "verbs": list(self.subresource_kind_verbs(sub)[1]),
                }
                for sub in self.subresources
            ]
        return entry


RBAC_GROUP = "rbac.authorization.k8s.io"


def _core(plural: str, kind: str, **kwargs: Any) -> Resource:
    return Resource("", "v1", plural, kind.lower(), kind, **kwargs)


BUILTIN_RESOURCES: tuple[Resource, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status", "finalize"),
        field_labels=META_FIELDS | {"status.phase"},
    ),
    _core(
        "pods",
        "Pod",
        namespaced=True,
        short_names=("po",),
        categories=("all",),
        subresources=("status", "log", "binding"),
        field_labels=POD_FIELDS,
        has_generation=True,
    ),
    _core(
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        subresources=("status",),
        field_labels=META_FIELDS | {"spec.unschedulable"},
    ),
    _core("events", "Event", namespaced=True, short_names=("ev",), field_labels=CORE_EVENT_FIELDS),
    _core("secrets", "Secret", namespaced=True, field_labels=META_FIELDS | {"type"}),
    _core("configmaps", "ConfigMap", namespaced=True, short_names=("cm",)),
    _core("serviceaccounts", "ServiceAccount", namespaced=True, short_names=("sa",)),
    _core(
        "services",
        "Service",
        namespaced=True,
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
    ),
    Resource(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        namespaced=True,
        short_names=("ev",),
        field_labels=EVENT_FIELDS,
    ),
    Resource("coordination.k8s.io", "v1", "leases", "lease", "Lease", namespaced=True),
    # What a Helm chart installs beside the operator (stored as given, never enforced: the
    # emulator has no authorization; request hooks record what a client would need).
    *(
        Resource(RBAC_GROUP, "v1", f"{kind.lower()}s", kind.lower(), kind, namespaced=namespaced)
        for kind, namespaced in (
            ("Role", True),
            ("RoleBinding", True),
            ("ClusterRole", False),
            ("ClusterRoleBinding", False),
        )
    ),
    Resource(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        namespaced=True,
        short_names=("pdb",),
        subresources=("status",),
        has_generation=True,
    ),
    Resource(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        namespaced=True,
        short_names=("netpol",),
        has_generation=True,
    ),
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=("status",),
        has_generation=True,
    ),
)
CRD_STORAGE = "apiextensions.k8s.io/customresourcedefinitions"


def crd_resources(crd: dict[str, Any]) -> list[Resource]:
    """The resources a CustomResourceDefinition serves, one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    kind = names["kind"]
    resources = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        selectable = {str(f["jsonPath"]).lstrip(".") for f in version.get("selectableFields") or []}
        resources.append(
            Resource(
                spec["group"],
                version["name"],
                names["plural"],
                names.get("singular") or kind.lower(),
                kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=("status",) if "status" in subresources else (),
                field_labels=META_FIELDS | selectable,
                has_generation=True,
                custom=True,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=version.get("additionalPrinterColumns"),
            )
        )
    return resources


class Registry:
    """Every served resource, found by URL parts, by kind or by storage key."""

    def __init__(self) -> None:
        self._by_url: dict[tuple[str, str, str], Resource] = {}
        self._by_kind: dict[tuple[str, str], Resource] = {}
        self._versions: dict[str, list[Resource]] = {}  # storage -> its served versions
        self._crd_storage: dict[str, str] = {}  # CRD name -> storage
        for resource in BUILTIN_RESOURCES:
            self._add(resource)

    def _add(self, resource: Resource) -> None:
        self._by_url[(resource.group, resource.version, resource.plural)] = resource
        self._by_kind.setdefault((resource.group, resource.kind), resource)
        self._versions.setdefault(resource.storage, []).append(resource)

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_url.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        group = api_version.rpartition("/")[0]
        version = api_version.rpartition("/")[2]
        resource = self._by_kind.get((group, kind))
        if resource is None:
            return None
        return self.find(group, version, resource.plural) or resource

    def versions(self, storage: str) -> list[Resource]:
        return self._versions.get(storage, [])

    def namespaced_storages(self) -> list[str]:
        return [s for s, rs in self._versions.items() if rs and rs[0].namespaced]

    def register_crd(self, crd: dict[str, Any]) -> list[Resource]:
        """Serve (or re-serve, on update) the resources of a CRD."""
        self.unregister_crd(crd["metadata"]["name"])
        resources = crd_resources(crd)
        for resource in resources:
            self._add(resource)
        if resources:
            self._crd_storage[crd["metadata"]["name"]] = resources[0].storage
        return resources

    def unregister_crd(self, name: str) -> None:
        storage = self._crd_storage.pop(name, None)
        if storage is None:
            return
        for resource in self._versions.pop(storage, []):
            self._by_url.pop((resource.group, resource.version, resource.plural), None)
            if self._by_kind.get((resource.group, resource.kind)) is resource:
                del self._by_kind[(resource.group, resource.kind)]

    def crd_storage(self, name: str) -> str | None:
        return self._crd_storage.get(name)

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> served versions, in registration order ("" is the core group)."""
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._by_url:
            versions = groups.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        return groups

    def resources(self, group: str, version: str) -> Iterator[Resource]:
        for (g, v, _), resource in self._by_url.items():
            if g == group and v == version:
                yield resource
