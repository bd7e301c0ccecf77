"""The PATCH body types of the Kubernetes API: JSON merge patch (RFC 7386), JSON patch
(RFC 6902, through the jsonpatch library, `test` included) and strategic merge patch.

The strategic merge patch knows the merge keys of the fields Kubetune, kubectl and kopf use
(containers, initContainers, env, ports, volumes, volumeMounts by name or path, conditions by
type, ownerReferences by uid, finalizers merged as a set) and the directives kubectl sends
(`$patch: replace|delete`, `$retainKeys`, `$setElementOrder/...`,
`$deleteFromPrimitiveList/...`); any other list is replaced, as for fields with no patch
strategy. Server-side apply (application/apply-patch+yaml) is not supported: `apply_patch`
raises UnsupportedPatch and the server answers 415.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply: answered 415
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
