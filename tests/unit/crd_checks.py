"""What a Kubernetes API server does with a CRD schema, in Python, for the CRD tests.

- structural_problems: the structural-schema rules of apiextensions.k8s.io/v1, written from
  https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
  and the checks the API server makes beside them (no $ref, no null type, ...).
- kubectl_apply_errors: what `kubectl apply` meets on the server, through the embedded control
  plane's admission (kubetune_localcluster.schemas): unknown fields refused (kubectl's strict
  field validation), defaulting, OpenAPI validation, then the CEL rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubetune_localcluster.admission import admit
from kubetune_localcluster.field_errors import InvalidObject
from kubetune_localcluster.pruning import apply_defaults

Schema = dict[str, Any]

TYPES = frozenset({"array", "boolean", "integer", "number", "object", "string"})
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")
FORBIDDEN_ANYWHERE = (
    "$ref",
    "$schema",
    "definitions",
    "dependencies",
    "additionalItems",
    "patternProperties",
    "id",
)
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
__all__ = [
    "apply_defaults",
    "kubectl_apply_errors",
    "structural_problems",
    "transition_rules_outside_correlatable_nodes",
]


# --- structural schema rules -----------------------------------------------------------------


def _children(node: Schema, path: str) -> Iterator[tuple[Schema, str]]:
    for name, child in node.get("properties", {}).items():
        yield child, f"{path}.{name}"
    if isinstance(node.get("additionalProperties"), dict):
        yield node["additionalProperties"], f"{path}.*"
    if isinstance(node.get("items"), dict):
        yield node["items"], f"{path}[]"


def _junctor_branches(node: Schema) -> list[Schema]:
    branches: list[Schema] = []
    for key in JUNCTORS:
        value = node.get(key)
        if isinstance(value, list):
            branches.extend(value)
        elif isinstance(value, dict):
            branches.append(value)
    return branches


def _is_int_or_string_pattern(node: Schema) -> bool:
    any_of = node.get("anyOf")
    all_of = node.get("allOf")
    if any_of is not None and any_of != INT_OR_STRING:
        return False
    if all_of is not None and not (
        isinstance(all_of, list) and all_of and all_of[0].get("anyOf") == INT_OR_STRING
    ):
        return False
    return any_of is not None or all_of is not None


def _junctor_problems(branch: Schema, outer: Schema, path: str) -> list[str]:
    """Inside allOf/anyOf/oneOf/not: no types, descriptions or defaults, and nothing that the
    node does not also specify outside the junctor."""
    problems = [
        f"{path}: {key} inside allOf/anyOf/oneOf/not"
        for key in FORBIDDEN_IN_JUNCTORS
        if key in branch and not (key == "type" and outer.get("x-kubernetes-int-or-string"))
    ]
    for name, child in branch.get("properties", {}).items():
        if name not in outer.get("properties", {}):
            problems.append(f"{path}.{name}: specified in a junctor but not outside it")
        problems += _junctor_problems(child, outer.get("properties", {}).get(name, {}), path)
    if "items" in branch:
        if "items" not in outer:
            problems.append(f"{path}[]: items specified in a junctor but not outside it")
        problems += _junctor_problems(branch["items"], outer.get("items", {}), f"{path}[]")
    for nested in _junctor_branches(branch):
        problems += _junctor_problems(nested, outer, path)
    return problems


def _metadata_problems(metadata: Schema) -> list[str]:
    allowed = {"type"}
    problems = [
        f"metadata: {key} is not allowed" for key in metadata if key not in allowed | {"properties"}
    ]
    if metadata.get("type", "object") != "object":
        problems.append("metadata: type must be object")
    for name, child in metadata.get("properties", {}).items():
        if name not in ("name", "generateName"):
            problems.append(f"metadata.{name}: only name and generateName may be restricted")
        elif child.get("type") != "string":
            problems.append(f"metadata.{name}: must be of type string")
    return problems


def structural_problems(node: Schema, path: str = "", *, root: bool = True) -> list[str]:
    """Every way `node` breaks the structural-schema rules; [] when it is structural."""
    problems: list[str] = []
    where = path or "<root>"
    for key in FORBIDDEN_ANYWHERE:
        if key in node:
            problems.append(f"{where}: {key} is not allowed in a CRD schema")
    type_ = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or absent")
    if type_ is None or type_ == "":
        if not (int_or_string or preserve):
            problems.append(f"{where}: no type (needed unless int-or-string or preserve-unknown)")
    elif not isinstance(type_, str) or type_ not in TYPES:
        problems.append(
            f"{where}: type {type_!r} is not one of {sorted(TYPES)} (null is not a type)"
        )
    if int_or_string:
        if type_:
            problems.append(f"{where}: x-kubernetes-int-or-string needs an empty type")
        if any(k in node for k in ("anyOf", "allOf")) and not _is_int_or_string_pattern(node):
            problems.append(f"{where}: int-or-string allows only anyOf [integer, string]")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if node.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties: false is not allowed (pruning does it)")
    if isinstance(node.get("items"), list):
        problems.append(f"{where}: items must be one schema, not a list")
    if node.get("uniqueItems") is True:
        problems.append(f"{where}: uniqueItems: true is not allowed")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            problems.append(f"{where}: {bound} must be a boolean beside minimum/maximum")
    if node.get("x-kubernetes-list-type") == "map":
        items = node.get("items", {})
        for key in node.get("x-kubernetes-list-map-keys", []):
            key_schema = items.get("properties", {}).get(key)
            if key_schema is None or key_schema.get("type") not in ("string", "integer", "boolean"):
                problems.append(f"{where}: list-map key {key} must be a scalar field of the items")
            elif key not in items.get("required", []) and "default" not in key_schema:
                problems.append(f"{where}: list-map key {key} must be required or defaulted")
    for rule in node.get("x-kubernetes-validations", []):
        if not rule.get("rule"):
            problems.append(f"{where}: a validation rule is empty")
        if "\n" in rule.get("message", ""):
            problems.append(f"{where}: a validation message has a line break")
    if node.get("nullable") is True and "default" in node and node["default"] is None:
        problems.append(f"{where}: a null default is pruned away")
    if not int_or_string or not _is_int_or_string_pattern(node):
        for branch in _junctor_branches(node):
            problems += _junctor_problems(branch, node, where)
    if root:
        if type_ != "object":
            problems.append("<root>: the root must be of type object")
        if "metadata" in node.get("properties", {}):
            problems += _metadata_problems(node["properties"]["metadata"])
    for child, child_path in _children(node, path):
        problems += structural_problems(child, child_path, root=False)
    return problems


def transition_rules_outside_correlatable_nodes(node: Schema, path: str = "") -> list[str]:
    """Rules with oldSelf run only where the old object can be matched: not under a list
    unless it is a list-type map."""
    found: list[str] = []

    def walk(node: Schema, path: str, correlatable: bool) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" in rule["rule"] and not correlatable:
                found.append(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}", correlatable)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*", correlatable)
        if isinstance(node.get("items"), dict):
            keyed = node.get("x-kubernetes-list-type") == "map"
            walk(node["items"], f"{path}[]", correlatable and keyed)

    walk(node, path, True)
    return found


# --- what kubectl apply meets ----------------------------------------------------------------


def kubectl_apply_errors(schema: Schema, obj: Any, old: Any = None) -> list[str]:
    """Every error the API server gives for `obj` (created, or updated from `old`), as
    kubectl prints them: 'field: message', or 'unknown field "..."' (strict field validation,
    kubectl's default)."""
    stored = admit(schema, old, None)[0] if old is not None else None
    try:
        admit(schema, obj, stored)
    except InvalidObject as error:
        if error.code == 400:
            return [cause["message"] for cause in error.causes]
        return [f"{cause['field'] or '<nil>'}: {cause['message']}" for cause in error.causes]
    return []
