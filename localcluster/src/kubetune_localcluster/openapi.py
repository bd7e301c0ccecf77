"""The API server's OpenAPI documents: /openapi/v3 (an index of group-version documents) and
/openapi/v2, built from the CRDs' openAPIV3Schema (as apiextensions-apiserver's builder does:
ObjectMeta by reference, x-kubernetes-group-version-kind, a List kind) and, for the built-in
kinds, from the Kubernetes 1.37 schemas that kubernetes-validate ships (`builtin_schemas`: the
subset we serve is kept in builtin-schemas.json.gz, which tests check against
kubernetes-validate).

kubectl needs them: `kubectl apply` (validation on) reads /openapi/v3 and, finding a PATCH
operation for the kind with a fieldValidation parameter, leaves validation to the server
(fieldValidation=Strict), and sends a strategic merge patch only where the PATCH operation
lists that content type (built-in kinds; never custom ones, which the API server answers 415
for it); with neither v3 nor v2 it refuses to apply. `kubectl explain` walks
components.schemas from the schema whose x-kubernetes-group-version-kind names the kind.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, NamedTuple

from kubetune_localcluster.builtin_schemas import BUILTIN_KINDS, COMMON, META, builtin_components
from kubetune_localcluster.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
)

OBJECT_META = META + "ObjectMeta"
LIST_META = META + "ListMeta"
METADATA_DESCRIPTION = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
LIST_METADATA_DESCRIPTION = (
    "Standard list metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


class ServedKind(NamedTuple):
    """A kind with paths in a document: its plural, whether namespaced, its component name,
    and whether a CRD serves it (no strategic merge patch then)."""

    plural: str
    kind: str
    namespaced: bool
    name: str
    custom: bool


def _split(group_version: str) -> tuple[str, str, str]:
    """'v1' / 'api/v1' / 'kubetune.io/v1alpha1' / 'apis/kubetune.io/v1alpha1' as
    (index key, group, version)."""
    text = group_version.strip("/")
    if text.startswith("api/"):
        text = text[4:]
    elif text.startswith("apis/"):
        text = text[5:]
    group, _, version = text.rpartition("/")
    key = f"apis/{group}/{version}" if group else f"api/{version}"
    return key, group, version


def document_hash(document: dict[str, Any]) -> str:
    """The hash in a document's serverRelativeURL (SHA-512, upper-case hex, as the API server
    makes it); kubectl caches documents by it, so it must change when the document does."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha512(text.encode()).hexdigest().upper()


def openapi_v3_paths(
    group_versions: list[str], *, documents: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The /openapi/v3 index: {"paths": {"api/v1": {"serverRelativeURL":
    "/openapi/v3/api/v1?hash=..."}, "apis/kubetune.io/v1alpha1": {...}}}. `documents` (by the
    group versions as given) makes each hash that of its document; without it the hash is that
    of the name, and a client's cache would not notice a changed schema."""
    paths: dict[str, Any] = {}
    for group_version in group_versions:
        key = _split(group_version)[0]
        document = (documents or {}).get(group_version, {"name": key})
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(document)}"}
    return {"paths": dict(sorted(paths.items()))}


def definition_name(group: str, version: str, kind: str) -> str:
    """The component name of a CRD kind: the group reversed, as the API server names it
    (kubetune.io/v1alpha1 TuningStudy: io.kubetune.v1alpha1.TuningStudy)."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def _ref(ref_prefix: str, name: str, description: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": ref_prefix + name}], "default": {}, "description": description}


def _crd_components(
    crd: dict[str, Any], version: str, ref_prefix: str
) -> tuple[dict[str, Any], ServedKind | None]:
    """The kind and list schemas of one served CRD version, and the kind for the paths."""
    spec = crd["spec"]
    group, names = spec["group"], spec["names"]
    for served in spec.get("versions", []):
        if served.get("name") != version or not served.get("served", True):
            continue
        schema = copy.deepcopy(served.get("schema", {}).get("openAPIV3Schema", {"type": "object"}))
        schema.setdefault("type", "object")
        properties = schema.setdefault("properties", {})
        properties["metadata"] = _ref(ref_prefix, OBJECT_META, METADATA_DESCRIPTION)
        properties.setdefault("apiVersion", {"type": "string"}).setdefault(
            "description", API_VERSION_DESCRIPTION
        )
        properties.setdefault("kind", {"type": "string"}).setdefault(
            "description", KIND_DESCRIPTION
        )
        kind = names["kind"]
        schema["x-kubernetes-group-version-kind"] = [_gvk(group, version, kind)]
        name = definition_name(group, version, kind)
        list_kind = names.get("listKind", kind + "List")
        listing = {
            "description": f"{list_kind} is a list of {kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": API_VERSION_DESCRIPTION},
                "items": {
                    "type": "array",
                    "description": (
                        f"List of {names['plural']}. More info: "
                        "https://git.k8s.io/community/contributors/devel/api-conventions.md"
                    ),
                    "items": {"$ref": ref_prefix + name},
                },
                "kind": {"type": "string", "description": KIND_DESCRIPTION},
                "metadata": _ref(ref_prefix, LIST_META, LIST_METADATA_DESCRIPTION),
            },
            "x-kubernetes-group-version-kind": [_gvk(group, version, list_kind)],
        }
        namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        components = {name: schema, definition_name(group, version, list_kind): listing}
        return components, ServedKind(names["plural"], kind, namespaced, name, custom=True)
    return {}, None


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": True},
    }


FIELD_VALIDATION = _query(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn, "
    "Strict (the default).",
)
DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted.")
FIELD_MANAGER = _query("fieldManager", "fieldManager is a name associated with the actor.")


def _patch_media(custom: bool) -> list[str]:
    """The PATCH content types of a kind: a custom resource has no strategic merge patch (the
    API server lists none for it, so kubectl apply sends it a JSON merge patch instead)."""
    media = [APPLY_PATCH, JSON_PATCH, MERGE_PATCH]
    return media if custom else [*media, STRATEGIC_MERGE_PATCH]


def _operation(
    action: str,
    kind: str,
    group: str,
    version: str,
    ref_prefix: str,
    name: str,
    *,
    v2: bool,
    custom: bool,
) -> dict[str, Any]:
    parameters = [DRY_RUN, FIELD_MANAGER]
    if action in ("post", "put", "patch"):
        parameters = [*parameters, FIELD_VALIDATION]
    if v2:
        parameters = [
            {k: v for k, v in p.items() if k != "schema"} | {"type": "string"} for p in parameters
        ]
    verb = {"get": "read", "put": "replace", "patch": "patch", "delete": "delete", "post": "create"}
    operation: dict[str, Any] = {
        "operationId": f"{verb[action]}{kind}",
        "parameters": parameters,
        "x-kubernetes-action": {"post": "post", "put": "put", "patch": "patch"}.get(
            action, "get" if action == "get" else "delete"
        ),
        "x-kubernetes-group-version-kind": _gvk(group, version, kind),
    }
    if v2:
        operation["responses"] = {
            "200": {"description": "OK", "schema": {"$ref": ref_prefix + name}}
        }
        if action == "patch":
            operation["consumes"] = _patch_media(custom)
    else:
        content = {"application/json": {"schema": {"$ref": ref_prefix + name}}}
        operation["responses"] = {"200": {"description": "OK", "content": content}}
        if action in ("post", "put", "patch"):
            media = _patch_media(custom) if action == "patch" else ["application/json"]
            body_schema = {"$ref": ref_prefix + (META + "Patch" if action == "patch" else name)}
            operation["requestBody"] = {"content": {m: {"schema": body_schema} for m in media}}
    return operation


def _paths(
    prefix: str,
    resources: list[ServedKind],
    group: str,
    version: str,
    ref_prefix: str,
    *,
    v2: bool,
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for served in resources:
        scope = "/namespaces/{namespace}" if served.namespaced else ""
        collection = f"{prefix}{scope}/{served.plural}"

        def op(action: str, served: ServedKind = served) -> dict[str, Any]:
            return _operation(
                action,
                served.kind,
                group,
                version,
                ref_prefix,
                served.name,
                v2=v2,
                custom=served.custom,
            )

        paths[collection] = {"get": op("get"), "post": op("post")}
        paths[collection + "/{name}"] = {
            action: op(action) for action in ("get", "put", "patch", "delete")
        }
    return paths


def _builtin_resources(group: str, version: str, kinds: list[str]) -> list[ServedKind]:
    group_version = f"{group}/{version}" if group else version
    found = []
    for kind in kinds:
        entry = BUILTIN_KINDS.get((group_version, kind))
        if entry is not None:
            name, plural, namespaced = entry
            found.append(ServedKind(plural, kind, namespaced, name, custom=False))
    return found


def openapi_v3_document(
    group_version: str, builtin_kinds: list[str], crds: list[dict[str, Any]]
) -> dict[str, Any]:
    """The OpenAPI v3 document of one group/version: components.schemas with
    x-kubernetes-group-version-kind for every kind (CRD kinds from their openAPIV3Schema plus
    ObjectMeta; built-in kinds from the Kubernetes schemas), and paths with the fieldValidation
    parameter on PATCH, so that `kubectl apply` leaves validation to the server and
    `kubectl explain tuningstudy.spec` works."""
    key, group, version = _split(group_version)
    ref_prefix = "#/components/schemas/"
    resources = _builtin_resources(group, version, builtin_kinds)
    schemas = builtin_components(
        [served.name for served in resources]
        + [served.name + "List" for served in resources]
        + [OBJECT_META, LIST_META, *COMMON],
        ref_prefix,
    )
    for crd in crds:
        if crd.get("spec", {}).get("group") != group:
            continue
        components, resource = _crd_components(crd, version, ref_prefix)
        schemas.update(components)
        if resource is not None:
            resources.append(resource)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": _paths("/" + key, resources, group, version, ref_prefix, v2=False),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def _v2_node(node: Any) -> Any:
    """An OpenAPI v3 schema node in swagger 2.0 form (as the API server publishes CRDs in v2:
    no nullable, no anyOf/oneOf/not, $ref without allOf)."""
    if isinstance(node, list):
        return [_v2_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("nullable", "anyOf", "oneOf", "not"):
            continue
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "properties":
            out[key] = {name: _v2_node(child) for name, child in value.items()}
        else:
            out[key] = _v2_node(value)
    all_of = out.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        del out["allOf"]
        out.pop("default", None)
        out["$ref"] = all_of[0]["$ref"]
    return out


def openapi_v2(crds: list[dict[str, Any]]) -> dict[str, Any]:
    """/openapi/v2 (swagger 2.0) with definitions of the built-in kinds and the CRDs' served
    versions, and their paths, for clients that still read v2."""
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    v3_prefix = "#/components/schemas/"
    by_group_version: dict[tuple[str, str], list[str]] = {}
    for group_version, kind in BUILTIN_KINDS:
        group, _, version = group_version.rpartition("/")
        by_group_version.setdefault((group, version), []).append(kind)
    for (group, version), kinds in by_group_version.items():
        resources = _builtin_resources(group, version, kinds)
        names = [served.name for served in resources]
        components = builtin_components(
            names + [n + "List" for n in names] + [OBJECT_META, LIST_META, *COMMON], v3_prefix
        )
        definitions.update({name: _v2_node(schema) for name, schema in components.items()})
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        paths.update(_paths(prefix, resources, group, version, "#/definitions/", v2=True))
    for crd in crds:
        spec = crd.get("spec", {})
        for served in spec.get("versions", []):
            components, resource = _crd_components(crd, served["name"], v3_prefix)
            definitions.update({name: _v2_node(schema) for name, schema in components.items()})
            if resource is not None:
                prefix = f"/apis/{spec['group']}/{served['name']}"
                paths.update(
                    _paths(
                        prefix, [resource], spec["group"], served["name"], "#/definitions/", v2=True
                    )
                )
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }
