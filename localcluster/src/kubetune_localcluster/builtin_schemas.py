"""The schemas of the built-in kinds the API server serves, from the Kubernetes 1.37
schemas that kubernetes-validate ships: the subset kept in builtin-schemas.json.gz and its
definitions as the API server's OpenAPI has them (plain types, int-or-string, references).
"""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

BUILTIN_SCHEMAS = Path(__file__).with_name("builtin-schemas.json.gz")
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
# The built-in kinds we serve: definition name, plural, namespaced.
BUILTIN_KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Pod"): ("io.k8s.api.core.v1.Pod", "pods", True),
    ("v1", "Namespace"): ("io.k8s.api.core.v1.Namespace", "namespaces", False),
    ("v1", "Event"): ("io.k8s.api.core.v1.Event", "events", True),
    ("v1", "Secret"): ("io.k8s.api.core.v1.Secret", "secrets", True),
    ("v1", "ConfigMap"): ("io.k8s.api.core.v1.ConfigMap", "configmaps", True),
    ("v1", "ServiceAccount"): ("io.k8s.api.core.v1.ServiceAccount", "serviceaccounts", True),
    ("v1", "Service"): ("io.k8s.api.core.v1.Service", "services", True),
    ("v1", "Binding"): ("io.k8s.api.core.v1.Binding", "bindings", True),
    ("coordination.k8s.io/v1", "Lease"): ("io.k8s.api.coordination.v1.Lease", "leases", True),
    ("events.k8s.io/v1", "Event"): ("io.k8s.api.events.v1.Event", "events", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("io.k8s.api.rbac.v1.Role", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "io.k8s.api.rbac.v1.RoleBinding",
        "rolebindings",
        True,
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (
        "io.k8s.api.rbac.v1.ClusterRole",
        "clusterroles",
        False,
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        "clusterrolebindings",
        False,
    ),
    ("policy/v1", "PodDisruptionBudget"): (
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        "poddisruptionbudgets",
        True,
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "io.k8s.api.networking.v1.NetworkPolicy",
        "networkpolicies",
        True,
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        "customresourcedefinitions",
        False,
    ),
}
# Served in every document: what operations take and return.
COMMON = (META + "Status", META + "DeleteOptions", META + "Patch", META + "WatchEvent")
_REF = re.compile(r"^#/\$defs/(.+)$")


def builtin_subset(definitions: dict[str, Any]) -> dict[str, Any]:
    """The definitions of the built-in kinds we serve and everything they refer to, taken from
    kubernetes-validate's _definitions.json ($defs, JSON-schema form)."""
    wanted = [name for name, _, _ in BUILTIN_KINDS.values()]
    wanted += [name + "List" for name in wanted] + list(COMMON)
    seen: dict[str, Any] = {}
    todo = [name for name in wanted if name in definitions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = definitions[name]
        todo += re.findall(r'"#/\$defs/([^"]+)"', json.dumps(definitions[name]))
    return dict(sorted(seen.items()))


@cache
def _builtin_definitions() -> dict[str, Any]:
    with gzip.open(BUILTIN_SCHEMAS, "rt", encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def _openapi_node(node: Any, ref_prefix: str) -> Any:
    """A kubernetes-validate JSON-schema node as the API server's OpenAPI has it: plain types
    (no "null"), IntOrString and Quantity as strings, references under `ref_prefix`, and no
    enum on apiVersion/kind."""
    if isinstance(node, list):
        return [_openapi_node(item, ref_prefix) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$schema", "$id"):
            continue
        if key == "$ref":
            match = _REF.match(value)
            out[key] = ref_prefix + (match.group(1) if match else value.rsplit("/", 1)[-1])
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out[key] = types[0] if len(types) == 1 else types
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _openapi_node(child, ref_prefix) for name, child in value.items()}
        else:
            out[key] = _openapi_node(value, ref_prefix)
    one_of = out.get("oneOf")
    if isinstance(one_of, list) and {b.get("type") for b in one_of} in (
        {"string", "integer"},
        {"string", "number"},
    ):
        del out["oneOf"]
        out["type"] = "string"
        if {b.get("type") for b in one_of} == {"string", "integer"}:
            out["format"] = "int-or-string"
    if "$ref" in out and len(out) > 1:
        # OpenAPI 3.0 ignores a $ref's siblings: the API server wraps it in allOf.
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    props = out.get("properties", {})
    for meta_field in ("apiVersion", "kind"):
        if isinstance(props.get(meta_field), dict):
            props[meta_field].pop("enum", None)
    return out


def builtin_components(names: list[str], ref_prefix: str) -> dict[str, Any]:
    definitions = _builtin_definitions()
    seen: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen[name] = _openapi_node(definitions[name], ref_prefix)
        todo += re.findall(r'"#/\$defs/([^"]+)"', json.dumps(definitions[name]))
    return seen
