"""The OpenAPI validation of an already pruned and defaulted custom object (types, bounds,
required, enum, pattern, nullable, int-or-string, junctors) and the list-type map/set
uniqueness, with kube-openapi's wording; an update's unchanged values are not re-checked
(ratcheting).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from kubetune_localcluster.compiled_schemas import MISSING, Node
from kubetune_localcluster.field_errors import Cause, field_error, join_path
from kubetune_localcluster.go_format import go_float, go_scalar


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(node: Node, value: Any) -> bool:
    kind = _json_type(value)
    if node.int_or_string:
        return kind in ("integer", "string") or (kind == "number" and float(value).is_integer())
    wanted = node.type
    if not wanted or wanted == kind:
        return True
    if wanted == "number":
        return kind == "integer"
    if wanted == "integer":
        return kind == "number" and float(value).is_integer()  # isFloatInt
    return False


def _format_ok(fmt: str, value: str) -> bool:
    try:
        if fmt == "date-time":
            datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        elif fmt == "date":
            date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _bound(limit: float, value: Any) -> str:
    # MinimumNativeType: an integer value is compared with int64(bound) and printed as such.
    if isinstance(value, int):
        return str(int(limit))
    return go_float(limit)


def _number_causes(node: Node, value: Any, path: str) -> Iterator[Cause]:
    raw = node.raw
    number = float(value)
    if "maximum" in raw:
        top = raw["maximum"]
        exclusive = raw.get("exclusiveMaximum") is True
        if number > top or (exclusive and number == top):
            word = "less than" if exclusive else "less than or equal to"
            yield field_error(
                "FieldValueInvalid",
                path,
                value,
                f"{path} in body should be {word} {_bound(top, value)}",
            )
    if "minimum" in raw:
        low = raw["minimum"]
        exclusive = raw.get("exclusiveMinimum") is True
        if number < low or (exclusive and number == low):
            word = "greater than" if exclusive else "greater than or equal to"
            yield field_error(
                "FieldValueInvalid",
                path,
                value,
                f"{path} in body should be {word} {_bound(low, value)}",
            )
    if "multipleOf" in raw:
        factor = raw["multipleOf"]
        if factor and (number / factor) != int(number / factor):
            yield field_error(
                "FieldValueInvalid",
                path,
                value,
                f"{path} in body should be a multiple of {go_scalar(factor)}",
            )


def _string_causes(node: Node, value: str, path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxLength" in raw and len(value) > raw["maxLength"]:
        yield field_error(
            "FieldValueTooLong", path, value, f"may not be longer than {raw['maxLength']}"
        )
    if "minLength" in raw and len(value) < raw["minLength"]:
        yield field_error(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body should be at least {raw['minLength']} chars long",
        )
    if node.pattern is not None and node.pattern.search(value) is None:
        yield field_error(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body should match '{node.pattern.pattern}'",
        )
    fmt = raw.get("format")
    if fmt and not _format_ok(fmt, value):
        yield field_error(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body must be of type {fmt}: {json.dumps(value)}",
        )


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _array_causes(node: Node, value: list[Any], path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxItems" in raw and len(value) > raw["maxItems"]:
        yield field_error(
            "FieldValueTooMany", path, len(value), f"must have at most {raw['maxItems']} items"
        )
    if "minItems" in raw and len(value) < raw["minItems"]:
        yield field_error(
            "FieldValueInvalid",
            path,
            len(value),
            f"{path} in body should have at least {raw['minItems']} items",
        )
    if raw.get("uniqueItems") and len({canonical(v) for v in value}) < len(value):
        yield field_error(
            "FieldValueInvalid", path, "", f"{path} in body shouldn't contain duplicates"
        )


def _object_causes(node: Node, value: dict[str, Any], path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxProperties" in raw and len(value) > raw["maxProperties"]:
        yield field_error(
            "FieldValueTooMany",
            path,
            raw["maxProperties"],
            f"must have at most {raw['maxProperties']} items",
        )
    if "minProperties" in raw and len(value) < raw["minProperties"]:
        yield field_error(
            "FieldValueInvalid",
            path,
            raw["minProperties"],
            f"{path} in body should have at least {raw['minProperties']} properties",
        )
    for name in node.required:
        if name not in value:
            yield field_error("FieldValueRequired", join_path(path, name))


def _junctor_causes(node: Node, value: Any, path: str) -> Iterator[Cause]:
    for branch in node.junctors.get("allOf", ()):
        yield from schema_causes(branch, value, path, MISSING)
    any_of = [] if node.int_or_string else node.junctors.get("anyOf", [])
    if any_of and all(list(schema_causes(b, value, path, MISSING)) for b in any_of):
        yield field_error(
            "FieldValueInvalid", path, "", "must validate at least one schema (anyOf)"
        )
    if "oneOf" in node.junctors:
        passing = sum(
            not list(schema_causes(b, value, path, MISSING)) for b in node.junctors["oneOf"]
        )
        if passing != 1:
            yield field_error(
                "FieldValueInvalid", path, "", "must validate one and only one schema (oneOf)"
            )
    for branch in node.junctors.get("not", ()):
        if not list(schema_causes(branch, value, path, MISSING)):
            yield field_error("FieldValueInvalid", path, "", "must not validate the schema (not)")


def schema_causes(node: Node, value: Any, path: str, old: Any) -> Iterator[Cause]:
    """The schema errors of `value` at `path`; an update's unchanged values are not re-checked
    (CRD validation ratcheting)."""
    if old is not MISSING and value == old:
        return
    if value is None:
        if not node.nullable and (node.type or node.int_or_string):
            kind = "integer,string" if node.int_or_string else node.type
            yield field_error(
                "FieldValueTypeInvalid",
                path,
                "null",
                f'{path} in body must be of type {kind}: "null"',
            )
        return
    if not _type_ok(node, value):
        kind = "integer,string" if node.int_or_string else node.type
        found = _json_type(value)
        yield field_error(
            "FieldValueTypeInvalid",
            path,
            found,
            f'{path} in body must be of type {kind}: "{found}"',
        )
        return
    if node.enum is not None and value not in node.enum:
        values = [v if isinstance(v, str) else json.dumps(v) for v in node.enum]
        detail = "supported values: " + ", ".join(json.dumps(v) for v in values)
        yield field_error("FieldValueNotSupported", path, value, detail)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        yield from _number_causes(node, value, path)
    elif isinstance(value, str):
        yield from _string_causes(node, value, path)
    elif isinstance(value, list):
        yield from _array_causes(node, value, path)
        if node.items is not None:
            old_items = correlate_items(node, value, old)
            for index, item in enumerate(value):
                yield from schema_causes(node.items, item, f"{path}[{index}]", old_items[index])
    elif isinstance(value, dict):
        yield from _object_causes(node, value, path)
        old_map = old if isinstance(old, dict) else {}
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None:
                yield from schema_causes(
                    sub, child, join_path(path, name), old_map.get(name, MISSING)
                )
    if node.junctors:
        yield from _junctor_causes(node, value, path)


def correlate_items(node: Node, value: list[Any], old: Any) -> list[Any]:
    """The old item each new item corresponds to: by key for list-type map, by value for
    list-type set, none otherwise (as ratcheting and CEL transition rules correlate)."""
    if not isinstance(old, list):
        return [MISSING] * len(value)
    if node.list_type == "map" and node.map_keys:
        keys = node.map_keys
        by_key = {
            canonical([item.get(k) for k in keys]): item for item in old if isinstance(item, dict)
        }
        return [
            by_key.get(canonical([item.get(k) for k in keys]), MISSING)
            if isinstance(item, dict)
            else MISSING
            for item in value
        ]
    if node.list_type == "set":
        seen = {canonical(item) for item in old}
        return [item if canonical(item) in seen else MISSING for item in value]
    return [MISSING] * len(value)


def list_type_causes(node: Node, value: Any, path: str) -> Iterator[Cause]:
    """Duplicate keys of list-type map and duplicate items of list-type set
    (listtype.ValidateListSetsAndMaps)."""
    if not node.has_list_types:
        return
    if isinstance(value, list):
        if node.list_type == "set":
            seen: dict[str, int] = {}
            for index, item in enumerate(value):
                key = canonical(item)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == 2:
                    yield field_error("FieldValueDuplicate", f"{path}[{index}]", item)
        elif node.list_type == "map":
            for index, item in enumerate(value):
                if item is not None and not isinstance(item, dict):
                    yield field_error(
                        "FieldValueInvalid",
                        f"{path}[{index}]",
                        item,
                        "must be an object for an array of list-type map",
                    )
                    return
            counts: dict[str, int] = {}
            for index, item in enumerate(value):
                key_value = {
                    k: item[k] for k in node.map_keys if isinstance(item, dict) and k in item
                }
                key = canonical(key_value)
                counts[key] = counts.get(key, 0) + 1
                if counts[key] == 2:
                    yield field_error("FieldValueDuplicate", f"{path}[{index}]", key_value)
        if node.items is not None:
            for index, item in enumerate(value):
                yield from list_type_causes(node.items, item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None:
                yield from list_type_causes(sub, child, join_path(path, name))
