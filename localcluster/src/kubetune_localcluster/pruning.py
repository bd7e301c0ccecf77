"""Pruning and defaulting of a custom object, before its validation: unknown fields removed
(pruning.Prune), nulls of non-nullable fields without a default dropped, defaults applied
(apiextensions-apiserver's pruning and defaulting packages).
"""

from __future__ import annotations

from typing import Any

from kubetune_localcluster.compiled_schemas import MISSING, Node, Schema, compiled
from kubetune_localcluster.field_errors import join_path

# The ObjectMeta fields: anything else under metadata is unknown (objectmeta.Coerce).
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_META_KEYS = frozenset({"apiVersion", "kind", "metadata"})


def copy_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    return value


def _prune_meta(metadata: Any, path: str, unknown: list[str]) -> None:
    if isinstance(metadata, dict):
        for key in [k for k in metadata if k not in OBJECT_META_FIELDS]:
            unknown.append(join_path(path, key))
            del metadata[key]


def prune_unknown(
    value: Any, node: Node | None, path: str, unknown: list[str], *, meta: bool
) -> None:
    """Remove (and record) fields the schema does not specify (pruning.Prune); `meta` keeps
    apiVersion/kind/metadata, as at the root and in embedded resources."""
    if node is not None and node.preserve:
        if isinstance(value, dict):
            for key, child in value.items():
                if (meta or node.embedded) and key in _META_KEYS:
                    if key == "metadata":
                        _prune_meta(child, join_path(path, key), unknown)
                    continue
                sub = node.properties.get(key, node.additional)
                if sub is not None:
                    prune_unknown(child, sub, join_path(path, key), unknown, meta=sub.embedded)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                if node.items is not None:
                    prune_unknown(
                        child, node.items, f"{path}[{index}]", unknown, meta=node.items.embedded
                    )
        return
    if isinstance(value, dict):
        for key in list(value):
            child_path = join_path(path, key)
            if (meta or (node is not None and node.embedded)) and key in _META_KEYS:
                if key == "metadata":
                    _prune_meta(value[key], child_path, unknown)
                continue
            sub = node.properties.get(key) if node is not None else None
            if sub is None and node is not None:
                sub = node.additional
            if sub is None:
                unknown.append(child_path)
                del value[key]
            else:
                prune_unknown(value[key], sub, child_path, unknown, meta=sub.embedded)
    elif isinstance(value, list):
        items = node.items if node is not None else None
        for index, child in enumerate(value):
            prune_unknown(
                child, items, f"{path}[{index}]", unknown, meta=bool(items and items.embedded)
            )


def prune_nulls(value: Any, node: Node | None) -> None:
    """Drop null values of non-nullable fields that have no default
    (PruneNonNullableNullsWithoutDefaults)."""
    if isinstance(value, dict):
        for key in list(value):
            sub = None
            if node is not None:
                sub = node.properties.get(key, node.additional)
            child = value[key]
            if child is None and sub is not None and not sub.nullable and sub.default is MISSING:
                del value[key]
            else:
                prune_nulls(child, sub)
    elif isinstance(value, list):
        items = node.items if node is not None else None
        for child in value:
            prune_nulls(child, items)


def fill_defaults(value: Any, node: Node | None) -> None:
    """Apply defaults where the parent exists, deep-copied (defaulting.Default)."""
    if node is None:
        return
    if isinstance(value, dict):
        for key, sub in node.properties.items():
            if sub.default is MISSING:
                continue
            if key not in value or (value[key] is None and not sub.nullable):
                value[key] = copy_value(sub.default)
        for key in value:
            known = node.properties.get(key)
            if known is not None:
                fill_defaults(value[key], known)
            elif node.additional is not None:
                extra = node.additional
                if value[key] is None and not extra.nullable and extra.default is not MISSING:
                    value[key] = copy_value(extra.default)
                fill_defaults(value[key], extra)
    elif isinstance(value, list) and node.items is not None:
        items = node.items
        for index, child in enumerate(value):
            if child is None and not items.nullable and items.default is not MISSING:
                value[index] = copy_value(items.default)
            fill_defaults(value[index], items)


def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of `value` after the API server's null pruning and defaulting (no validation)."""
    node = compiled(schema)
    result = copy_value(value)
    prune_nulls(result, node)
    fill_defaults(result, node)
    return result
