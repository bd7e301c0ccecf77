"""The PATCH body types of the Kubernetes API: JSON merge patch (RFC 7386), JSON patch
(RFC 6902, through the jsonpatch library, `test` included) and strategic merge patch.

The strategic merge patch knows the merge keys of the fields Kubetune, kubectl and kopf use
(containers, initContainers, env, ports, volumes, volumeMounts by name or path, conditions by
type, ownerReferences by uid, finalizers merged as a set) and the directives kubectl sends
(`$patch: replace|delete`, `$retainKeys`, `$setElementOrder/...`,
`$deleteFromPrimitiveList/...`); any other list is replaced, as for fields with no patch
strategy.

Server-side apply (application/apply-patch+yaml) is `server_side_apply`: the applied
configuration is merged into the live object (maps field by field, lists by their list type:
atomic lists replaced, sets united, map lists merged item by item on their keys: the merge
keys above for built-in kinds, x-kubernetes-list-type/-list-map-keys of a CRD's schema), the
fields the manager applied are recorded in metadata.managedFields (FieldsV1), and the fields
it applied before but not this time are removed unless another apply manager owns them.
Conflicts between managers are not detected (every apply acts as --force-conflicts), and
fields written by plain updates have no recorded owner.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonpatch
import jsonpointer

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply: server_side_apply
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

# Lists merged item by item on a key (patchMergeKey in the Kubernetes API types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "addresses": "type",
    "secrets": "name",
}
CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
# Lists of scalars merged as sets (patchStrategy merge).
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be decoded (400) or applied (422)."""

    def __init__(self, message: str, *, decode: bool = False) -> None:
        super().__init__(message)
        self.decode = decode


class UnsupportedPatch(ValueError):  # noqa: N818 - named as the API words it
    """A PATCH content type this server does not apply (415)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902; a failed `test` or a missing path raises PatchError."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", decode=True)
    try:
        patch = jsonpatch.JsonPatch(operations)
        result = patch.apply(document, in_place=False)
    except jsonpatch.InvalidJsonPatch as error:
        raise PatchError(str(error), decode=True) from error
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise PatchError(str(error)) from error
    if not isinstance(result, dict):
        raise PatchError("json patch must leave an object")
    return result


def _merge_key(field: str, parent: str | None) -> str | None:
    if field == "ports":
        return "containerPort" if parent in CONTAINER_LISTS else "port"
    return MERGE_KEYS.get(field)


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def identity(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [identity(item) for item in order]
    ranked = [item for w in wanted for item in items if identity(item) == w]
    return ranked + [item for item in items if identity(item) not in wanted]


def _merge_list(original: list[Any], patch: list[Any], field: str, parent: str | None) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [strip_directives(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in SET_LISTS:
        return list(original) + [item for item in patch if item not in original]
    key = _merge_key(field, parent)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return [strip_directives(item) for item in patch]
    result = [copy.deepcopy(item) for item in original]
    for item in patch:
        position = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(strip_directives(item))
        else:
            result[position] = _merge_map(result[position], item, field)
    return result


def strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [strip_directives(item) for item in value]
    return value


def _merge_map(original: dict[str, Any], patch: dict[str, Any], parent: str | None) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return strip_directives(patch)
    result = dict(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.partition("/")[2]] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.partition("/")[2]
            if isinstance(result.get(field), list):
                result[field] = [item for item in result[field] if item not in value]
        elif key.startswith("$"):
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = _merge_map(result[key], value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, key, parent)
        else:
            result[key] = strip_directives(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _order(result[field], order, _merge_key(field, parent))
    if isinstance(patch.get("$retainKeys"), list):
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a strategic merge patch to an object (see the module docstring for its scope)."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be an object", decode=True)
    result = _merge_map(original, patch, None)
    return result if isinstance(result, dict) else {}


def apply_patch(content_type: str, original: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The object after applying a PATCH body of the given content type."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in PATCH_TYPES:
        raise UnsupportedPatch(media_type)
    try:
        patch = json.loads(body)
    except ValueError as error:
        raise PatchError(f"error decoding patch: {error}", decode=True) from error
    if media_type == JSON_PATCH:
        return json_patch(original, patch)
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be a JSON object", decode=True)
    if media_type == MERGE_PATCH:
        result = merge_patch(original, patch)
        return result if isinstance(result, dict) else {}
    return strategic_merge_patch(original, patch)


# --- server-side apply ------------------------------------------------------------------

ListShape = tuple[str, tuple[str, ...]]
"""How server-side apply merges a list: ("atomic" | "set" | "map", the keys of a map list)."""
ListShapes = Callable[[tuple[str, ...]], ListShape]
"""The shape of the list at a path of field names (list items take no step in the path)."""
ATOMIC: ListShape = ("atomic", ())
# Identity and system-set fields: the server's, never owned by an applier.
_UNOWNED_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


def builtin_list_shape(path: tuple[str, ...]) -> ListShape:
    """The list types of the built-in kinds (and of metadata): the merge keys above."""
    field = path[-1]
    if field in SET_LISTS:
        return ("set", ())
    key = _merge_key(field, path[-2] if len(path) > 1 else None)
    return ("map", (key,)) if key else ATOMIC


def schema_list_shapes(schema: dict[str, Any] | None) -> ListShapes:
    """The list types of a CRD's openAPIV3Schema (x-kubernetes-list-type, default atomic);
    metadata has the built-in ones."""

    def shape(path: tuple[str, ...]) -> ListShape:
        if schema is None or path[0] == "metadata":
            return builtin_list_shape(path)
        node: Any = schema
        for name in path:
            while isinstance(node.get("items"), dict):
                node = node["items"]
            properties = node.get("properties") or {}
            if name in properties:
                node = properties[name]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return ATOMIC
        kind = node.get("x-kubernetes-list-type")
        keys = tuple(node.get("x-kubernetes-list-map-keys") or ())
        if kind == "set":
            return ("set", ())
        return ("map", keys) if kind == "map" and keys else ATOMIC

    return shape


def _identity(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(item.get(key) for key in keys)


def _apply_merge(live: Any, config: Any, shapes: ListShapes, path: tuple[str, ...]) -> Any:
    """`config` merged into `live`: a null in the configuration removes the field."""
    if isinstance(config, dict):
        result = dict(live) if isinstance(live, dict) else {}
        for key, value in config.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = _apply_merge(result.get(key), value, shapes, (*path, key))
        return result
    if isinstance(config, list) and path:
        kind, keys = shapes(path)
        if isinstance(live, list) and kind == "set":
            return list(live) + [copy.deepcopy(item) for item in config if item not in live]
        if (
            isinstance(live, list)
            and kind == "map"
            and all(isinstance(item, dict) for item in [*live, *config])
        ):
            merged = list(live)
            for item in config:
                position = next(
                    (
                        i
                        for i, old in enumerate(merged)
                        if _identity(old, keys) == _identity(item, keys)
                    ),
                    None,
                )
                if position is None:
                    merged.append(_apply_merge(None, item, shapes, path))
                else:
                    merged[position] = _apply_merge(merged[position], item, shapes, path)
            return merged
        return [_apply_merge(None, item, shapes, path) for item in config]
    return copy.deepcopy(config)


def _item_key(item: Any, keys: tuple[str, ...]) -> str:
    fields = {key: item[key] for key in keys if key in item}
    return "k:" + json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _value_key(value: Any) -> str:
    return "v:" + json.dumps(value, separators=(",", ":"), sort_keys=True)


def _fields(value: dict[str, Any], shapes: ListShapes, path: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, child in value.items():
        if child is None:
            continue
        here = (*path, key)
        node: dict[str, Any] = {}
        if isinstance(child, dict):
            node = _fields(child, shapes, here)
        elif isinstance(child, list):
            kind, keys = shapes(here)
            if kind == "set" and not any(isinstance(i, dict | list) for i in child):
                node = {_value_key(item): {} for item in child}
            elif kind == "map" and all(isinstance(item, dict) for item in child):
                node = {_item_key(i, keys): {".": {}, **_fields(i, shapes, here)} for i in child}
        tree[f"f:{key}"] = node
    return tree


def applied_fields(config: dict[str, Any], shapes: ListShapes) -> dict[str, Any]:
    """The FieldsV1 set an apply configuration owns (its identity and kind excluded)."""
    owned = {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = config.get("metadata")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in _UNOWNED_META}
        if kept:
            owned = {"metadata": kept, **owned}
    return _fields(owned, shapes, ())


def field_paths(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The owned paths of a FieldsV1 set: its leaves and the items it marks with `.`."""
    if not isinstance(tree, dict):
        return
    for key, sub in tree.items():
        if key == ".":
            yield prefix
        elif isinstance(sub, dict) and sub:
            yield from field_paths(sub, (*prefix, key))
        else:
            yield (*prefix, key)


def _find_item(items: list[Any], step: str) -> int | None:
    try:
        wanted = json.loads(step[2:])
    except ValueError:
        return None
    for index, item in enumerate(items):
        if step.startswith("v:") and item == wanted:
            return index
        if (
            step.startswith("k:")
            and isinstance(item, dict)
            and isinstance(wanted, dict)
            and all(item.get(k) == v for k, v in wanted.items())
        ):
            return index
    return None


def _remove_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove the field or list item at a FieldsV1 path, and the maps and lists it leaves
    empty (`obj` is a private copy)."""
    parents: list[tuple[Any, Any]] = []
    node: Any = obj
    for step in path:
        if step.startswith("f:") and isinstance(node, dict) and step[2:] in node:
            parents.append((node, step[2:]))
            node = node[step[2:]]
        elif step[:2] in ("k:", "v:") and isinstance(node, list):
            index = _find_item(node, step)
            if index is None:
                return
            parents.append((node, index))
            node = node[index]
        else:
            return
    container, key = parents.pop()
    del container[key]
    while parents:
        container, key = parents.pop()
        if container[key] not in ({}, []):
            break
        del container[key]


def server_side_apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    time: str,
    shapes: ListShapes,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after `manager` applies `config` to `live` (None: the object is new), with
    the manager's Apply entry in metadata.managedFields (see the module docstring)."""
    config = {**config, "metadata": dict(config.get("metadata") or {})}
    config["metadata"].pop("managedFields", None)
    tree = applied_fields(config, shapes)
    entries = list(((live or {}).get("metadata") or {}).get("managedFields") or [])

    def mine(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and (entry.get("subresource") or None) == subresource
        )

    before = next((e for e in entries if mine(e)), None)
    result: dict[str, Any] = _apply_merge(live or {}, config, shapes, ())
    if before is not None:
        now = set(field_paths(tree))
        others = {p for e in entries if not mine(e) for p in field_paths(e.get("fieldsV1"))}
        dropped = sorted(set(field_paths(before.get("fieldsV1"))) - now, key=len)
        dropped = [
            path for path in dropped if not any(p[: len(path)] == path for p in now | others)
        ]
        if dropped:
            result = copy.deepcopy(result)
            for path in dropped:
                _remove_path(result, path)
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": tree,
    }
    if subresource:
        entry["subresource"] = subresource
    kept = [e for e in entries if not mine(e)]
    if tree:
        position = entries.index(before) if before is not None else len(kept)
        kept.insert(position, entry)
    result["metadata"] = {**(result.get("metadata") or {}), "managedFields": kept}
    return result
