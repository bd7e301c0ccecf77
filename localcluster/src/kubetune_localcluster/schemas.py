"""Admission of custom objects against their CRD's openAPIV3Schema, as a Kubernetes API server
does it: unknown fields pruned (or refused under fieldValidation=Strict), nulls pruned and
defaults applied, the OpenAPI validation, list-type map/set uniqueness and the CEL
x-kubernetes-validations rules (cel-python), with the field paths and messages the real server
gives (apiextensions-apiserver: pruning, defaulting, listtype and cel packages; kube-openapi's
validate errors, apimachinery's field.Error wording).

Each schema is compiled once (regular expressions, CEL programs, the node tree) and cached, so
admitting an object costs a walk over it, not over the schema. jsonschema is not used here: it
cannot word errors as Kubernetes does and knows nothing of nullable, int-or-string, list types,
embedded resources or ratcheting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]
Cause = dict[str, str]

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
# Errors after which the API server does not run the CEL rules (hasBlockingErr).
_BLOCKING = frozenset(
    {
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    }
)
_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
_REASON_WORDS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
}
_MISSING: Any = object()
_NO_VALUE = frozenset({"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"})
# CEL evaluation errors are validation results here, not internal errors worth logging.
logging.getLogger("celpy.Transpiler").setLevel(logging.CRITICAL)
# The interpreted runner: cel-python 0.5.0's transpiled runner gets has() of a missing field wrong.
_CEL = celpy.Environment(runner_class=celpy.InterpretedRunner)


class InvalidObject(Exception):  # noqa: N818 (the name the apiserver module uses)
    """The object is refused. code 422 (Invalid): causes are Kubernetes StatusCause dicts
    {"reason", "message", "field"}; code 400 (BadRequest): a strict decoding error (unknown
    fields under fieldValidation=Strict), worded in `message` as the API server words it."""

    def __init__(self, causes: list[Cause], *, code: int = 422, message: str = "") -> None:
        self.causes = causes
        self.code = code
        self.message = message or "; ".join(_cause_text(c) for c in causes)
        super().__init__(self.message)


def _cause_text(cause: Cause) -> str:
    return f"{cause.get('field') or '<nil>'}: {cause['message']}"


def invalid_status(kind: str, group: str, name: str, error: InvalidObject) -> dict[str, Any]:
    """The Status body the API server answers with for `error` (errors.NewInvalid, or the
    BadRequest of a strict decoding error)."""
    if error.code == 400:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": error.message,
            "reason": "BadRequest",
            "code": 400,
        }
    qualified = f"{kind}.{group}" if group else kind
    texts: list[str] = []
    for cause in error.causes:  # ToAggregate drops repeated messages
        text = _cause_text(cause)
        if text not in texts:
            texts.append(text)
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    message = f'{qualified} "{name}" is invalid'
    if texts:
        message += f": {listed}"
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind}
    details["causes"] = [
        {k: v for k, v in cause.items() if v != "" or k != "field"} for cause in error.causes
    ]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }


# --- Go formatting, as the API server's messages print values --------------------------------


def go_float(value: float) -> str:
    """A float64 as Go's %v prints it: shortest digits, exponent form from 1e+06 or below 1e-4."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # where the decimal point goes
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def _go_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    return json.dumps(value, ensure_ascii=False)


def _go_sharp(value: Any) -> str:
    """Go's %#v of an unstructured value (map[string]interface {}{...}, keys sorted)."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{_go_sharp(v)}" for k, v in sorted(value.items()))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_sharp(v) for v in value) + "}"
    if value is None:
        return "interface {}(nil)"
    return _go_scalar(value)


def _go_value(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it."""
    if value is None:
        return '"null"'
    if isinstance(value, dict | list):
        return _go_sharp(value)
    return _go_scalar(value)


def _cause(reason: str, path: str, value: Any = _MISSING, detail: str = "") -> Cause:
    words = _REASON_WORDS[reason]
    # Required, Forbidden and TooLong print no value (field.Error.ErrorBody).
    if value is not _MISSING and reason not in _NO_VALUE:
        words += f": {_go_value(value)}"
    if detail:
        words += f": {detail}"
    return {"reason": reason, "message": words, "field": path}


# --- compiled schemas ------------------------------------------------------------------------


@dataclass
class _Rule:
    rule: str
    program: Any
    message: str
    message_program: Any
    field_path: str
    reason: str | None
    transition: bool


@dataclass
class _Node:
    """One schema node, compiled."""

    raw: Schema
    type: str = ""
    nullable: bool = False
    int_or_string: bool = False
    preserve: bool = False
    embedded: bool = False
    properties: dict[str, _Node] = field(default_factory=dict)
    additional: _Node | None = None
    items: _Node | None = None
    default: Any = _MISSING
    required: tuple[str, ...] = ()
    enum: list[Any] | None = None
    pattern: re.Pattern[str] | None = None
    list_type: str | None = None
    map_keys: tuple[str, ...] = ()
    rules: list[_Rule] = field(default_factory=list)
    junctors: dict[str, list[_Node]] = field(default_factory=dict)
    has_rules: bool = False  # here or below
    has_transition_rules: bool = False  # here or below
    has_list_types: bool = False  # here or below


def _compile_rule(rule: Schema) -> _Rule:
    text = rule["rule"]
    program = _CEL.program(_CEL.compile(text))
    message_program = None
    if rule.get("messageExpression"):
        message_program = _CEL.program(_CEL.compile(rule["messageExpression"]))
    return _Rule(
        rule=text,
        program=program,
        message=rule.get("message", ""),
        message_program=message_program,
        field_path=rule.get("fieldPath", ""),
        reason=rule.get("reason"),
        transition=re.search(r"\boldSelf\b", text) is not None,
    )


def _compile(raw: Schema) -> _Node:
    node = _Node(raw=raw)
    node.type = raw.get("type", "") or ""
    node.nullable = bool(raw.get("nullable"))
    node.int_or_string = bool(raw.get("x-kubernetes-int-or-string"))
    node.preserve = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
    node.embedded = bool(raw.get("x-kubernetes-embedded-resource"))
    node.properties = {name: _compile(child) for name, child in raw.get("properties", {}).items()}
    if isinstance(raw.get("additionalProperties"), dict):
        node.additional = _compile(raw["additionalProperties"])
    if isinstance(raw.get("items"), dict):
        node.items = _compile(raw["items"])
    if "default" in raw:
        node.default = raw["default"]
    node.required = tuple(raw.get("required", ()))
    node.enum = raw.get("enum")
    if "pattern" in raw:
        node.pattern = re.compile(raw["pattern"])
    node.list_type = raw.get("x-kubernetes-list-type")
    node.map_keys = tuple(raw.get("x-kubernetes-list-map-keys", ()))
    node.rules = [_compile_rule(r) for r in raw.get("x-kubernetes-validations", [])]
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(raw.get(key), list):
            node.junctors[key] = [_compile(branch) for branch in raw[key]]
    if isinstance(raw.get("not"), dict):
        node.junctors["not"] = [_compile(raw["not"])]
    children = [*node.properties.values(), *(c for c in (node.additional, node.items) if c)]
    node.has_rules = bool(node.rules) or any(c.has_rules for c in children)
    node.has_transition_rules = any(r.transition for r in node.rules) or any(
        c.has_transition_rules for c in children
    )
    node.has_list_types = node.list_type in ("map", "set") or any(
        c.has_list_types for c in children
    )
    return node


_CACHE_SIZE = 64
_by_identity: OrderedDict[int, tuple[Schema, _Node]] = OrderedDict()
_by_content: OrderedDict[str, _Node] = OrderedDict()


def compiled(schema: Schema) -> _Node:
    """The compiled form of a schema, cached by identity (holding the schema, so its id stays
    its own) and by content, both bounded."""
    hit = _by_identity.get(id(schema))
    if hit is not None and hit[0] is schema:
        _by_identity.move_to_end(id(schema))
        return hit[1]
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    node = _by_content.get(digest)
    if node is None:
        node = _compile(schema)
        _by_content[digest] = node
        if len(_by_content) > _CACHE_SIZE:
            _by_content.popitem(last=False)
    _by_identity[id(schema)] = (schema, node)
    if len(_by_identity) > _CACHE_SIZE:
        _by_identity.popitem(last=False)
    return node


def schema_problems(schema: Schema) -> list[str]:
    """CEL rules that do not compile (the API server refuses such a CRD); [] when all do."""
    problems: list[str] = []

    def walk(raw: Schema, path: str) -> None:
        for rule in raw.get("x-kubernetes-validations", []):
            for key in ("rule", "messageExpression"):
                if rule.get(key):
                    try:
                        _CEL.compile(rule[key])
                    except CELParseError as error:
                        problems.append(f"{path or '<root>'}: {key} {rule[key]!r}: {error}")
        for name, child in raw.get("properties", {}).items():
            walk(child, f"{path}.{name}".lstrip("."))
        for key, suffix in (("additionalProperties", "[*]"), ("items", "[*]")):
            if isinstance(raw.get(key), dict):
                walk(raw[key], path + suffix)

    walk(schema, "")
    return problems


# --- pruning, nulls, defaults ----------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _prune_meta(metadata: Any, path: str, unknown: list[str]) -> None:
    if isinstance(metadata, dict):
        for key in [k for k in metadata if k not in OBJECT_META_FIELDS]:
            unknown.append(_join(path, key))
            del metadata[key]


def _prune(value: Any, node: _Node | None, path: str, unknown: list[str], *, meta: bool) -> None:
    """Remove (and record) fields the schema does not specify (pruning.Prune); `meta` keeps
    apiVersion/kind/metadata, as at the root and in embedded resources."""
    if node is not None and node.preserve:
        if isinstance(value, dict):
            for key, child in value.items():
                if (meta or node.embedded) and key in _META_KEYS:
                    if key == "metadata":
                        _prune_meta(child, _join(path, key), unknown)
                    continue
                sub = node.properties.get(key, node.additional)
                if sub is not None:
                    _prune(child, sub, _join(path, key), unknown, meta=sub.embedded)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                if node.items is not None:
                    _prune(child, node.items, f"{path}[{index}]", unknown, meta=node.items.embedded)
        return
    if isinstance(value, dict):
        for key in list(value):
            child_path = _join(path, key)
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
                _prune(value[key], sub, child_path, unknown, meta=sub.embedded)
    elif isinstance(value, list):
        items = node.items if node is not None else None
        for index, child in enumerate(value):
            _prune(child, items, f"{path}[{index}]", unknown, meta=bool(items and items.embedded))


def _prune_nulls(value: Any, node: _Node | None) -> None:
    """Drop null values of non-nullable fields that have no default
    (PruneNonNullableNullsWithoutDefaults)."""
    if isinstance(value, dict):
        for key in list(value):
            sub = None
            if node is not None:
                sub = node.properties.get(key, node.additional)
            child = value[key]
            if child is None and sub is not None and not sub.nullable and sub.default is _MISSING:
                del value[key]
            else:
                _prune_nulls(child, sub)
    elif isinstance(value, list):
        items = node.items if node is not None else None
        for child in value:
            _prune_nulls(child, items)


def _default(value: Any, node: _Node | None) -> None:
    """Apply defaults where the parent exists, deep-copied (defaulting.Default)."""
    if node is None:
        return
    if isinstance(value, dict):
        for key, sub in node.properties.items():
            if sub.default is _MISSING:
                continue
            if key not in value or (value[key] is None and not sub.nullable):
                value[key] = _copy(sub.default)
        for key in value:
            known = node.properties.get(key)
            if known is not None:
                _default(value[key], known)
            elif node.additional is not None:
                extra = node.additional
                if value[key] is None and not extra.nullable and extra.default is not _MISSING:
                    value[key] = _copy(extra.default)
                _default(value[key], extra)
    elif isinstance(value, list) and node.items is not None:
        items = node.items
        for index, child in enumerate(value):
            if child is None and not items.nullable and items.default is not _MISSING:
                value[index] = _copy(items.default)
            _default(value[index], items)


def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of `value` after the API server's null pruning and defaulting (no validation)."""
    node = compiled(schema)
    result = _copy(value)
    _prune_nulls(result, node)
    _default(result, node)
    return result


# --- OpenAPI validation ----------------------------------------------------------------------


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


def _type_ok(node: _Node, value: Any) -> bool:
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


def _number_causes(node: _Node, value: Any, path: str) -> Iterator[Cause]:
    raw = node.raw
    number = float(value)
    if "maximum" in raw:
        top = raw["maximum"]
        exclusive = raw.get("exclusiveMaximum") is True
        if number > top or (exclusive and number == top):
            word = "less than" if exclusive else "less than or equal to"
            yield _cause(
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
            yield _cause(
                "FieldValueInvalid",
                path,
                value,
                f"{path} in body should be {word} {_bound(low, value)}",
            )
    if "multipleOf" in raw:
        factor = raw["multipleOf"]
        if factor and (number / factor) != int(number / factor):
            yield _cause(
                "FieldValueInvalid",
                path,
                value,
                f"{path} in body should be a multiple of {_go_scalar(factor)}",
            )


def _string_causes(node: _Node, value: str, path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxLength" in raw and len(value) > raw["maxLength"]:
        yield _cause("FieldValueTooLong", path, value, f"may not be longer than {raw['maxLength']}")
    if "minLength" in raw and len(value) < raw["minLength"]:
        yield _cause(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body should be at least {raw['minLength']} chars long",
        )
    if node.pattern is not None and node.pattern.search(value) is None:
        yield _cause(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body should match '{node.pattern.pattern}'",
        )
    fmt = raw.get("format")
    if fmt and not _format_ok(fmt, value):
        yield _cause(
            "FieldValueInvalid",
            path,
            value,
            f"{path} in body must be of type {fmt}: {json.dumps(value)}",
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _array_causes(node: _Node, value: list[Any], path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxItems" in raw and len(value) > raw["maxItems"]:
        yield _cause(
            "FieldValueTooMany", path, len(value), f"must have at most {raw['maxItems']} items"
        )
    if "minItems" in raw and len(value) < raw["minItems"]:
        yield _cause(
            "FieldValueInvalid",
            path,
            len(value),
            f"{path} in body should have at least {raw['minItems']} items",
        )
    if raw.get("uniqueItems") and len({_canonical(v) for v in value}) < len(value):
        yield _cause("FieldValueInvalid", path, "", f"{path} in body shouldn't contain duplicates")


def _object_causes(node: _Node, value: dict[str, Any], path: str) -> Iterator[Cause]:
    raw = node.raw
    if "maxProperties" in raw and len(value) > raw["maxProperties"]:
        yield _cause(
            "FieldValueTooMany",
            path,
            raw["maxProperties"],
            f"must have at most {raw['maxProperties']} items",
        )
    if "minProperties" in raw and len(value) < raw["minProperties"]:
        yield _cause(
            "FieldValueInvalid",
            path,
            raw["minProperties"],
            f"{path} in body should have at least {raw['minProperties']} properties",
        )
    for name in node.required:
        if name not in value:
            yield _cause("FieldValueRequired", _join(path, name))


def _junctor_causes(node: _Node, value: Any, path: str) -> Iterator[Cause]:
    for branch in node.junctors.get("allOf", ()):
        yield from _validate(branch, value, path, _MISSING)
    any_of = [] if node.int_or_string else node.junctors.get("anyOf", [])
    if any_of and all(list(_validate(b, value, path, _MISSING)) for b in any_of):
        yield _cause("FieldValueInvalid", path, "", "must validate at least one schema (anyOf)")
    if "oneOf" in node.junctors:
        passing = sum(not list(_validate(b, value, path, _MISSING)) for b in node.junctors["oneOf"])
        if passing != 1:
            yield _cause(
                "FieldValueInvalid", path, "", "must validate one and only one schema (oneOf)"
            )
    for branch in node.junctors.get("not", ()):
        if not list(_validate(branch, value, path, _MISSING)):
            yield _cause("FieldValueInvalid", path, "", "must not validate the schema (not)")


def _validate(node: _Node, value: Any, path: str, old: Any) -> Iterator[Cause]:
    """The schema errors of `value` at `path`; an update's unchanged values are not re-checked
    (CRD validation ratcheting)."""
    if old is not _MISSING and value == old:
        return
    if value is None:
        if not node.nullable and (node.type or node.int_or_string):
            kind = "integer,string" if node.int_or_string else node.type
            yield _cause(
                "FieldValueTypeInvalid",
                path,
                "null",
                f'{path} in body must be of type {kind}: "null"',
            )
        return
    if not _type_ok(node, value):
        kind = "integer,string" if node.int_or_string else node.type
        found = _json_type(value)
        yield _cause(
            "FieldValueTypeInvalid",
            path,
            found,
            f'{path} in body must be of type {kind}: "{found}"',
        )
        return
    if node.enum is not None and value not in node.enum:
        values = [v if isinstance(v, str) else json.dumps(v) for v in node.enum]
        detail = "supported values: " + ", ".join(json.dumps(v) for v in values)
        yield _cause("FieldValueNotSupported", path, value, detail)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        yield from _number_causes(node, value, path)
    elif isinstance(value, str):
        yield from _string_causes(node, value, path)
    elif isinstance(value, list):
        yield from _array_causes(node, value, path)
        if node.items is not None:
            old_items = _correlate_items(node, value, old)
            for index, item in enumerate(value):
                yield from _validate(node.items, item, f"{path}[{index}]", old_items[index])
    elif isinstance(value, dict):
        yield from _object_causes(node, value, path)
        old_map = old if isinstance(old, dict) else {}
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None:
                yield from _validate(sub, child, _join(path, name), old_map.get(name, _MISSING))
    if node.junctors:
        yield from _junctor_causes(node, value, path)


def _correlate_items(node: _Node, value: list[Any], old: Any) -> list[Any]:
    """The old item each new item corresponds to: by key for list-type map, by value for
    list-type set, none otherwise (as ratcheting and CEL transition rules correlate)."""
    if not isinstance(old, list):
        return [_MISSING] * len(value)
    if node.list_type == "map" and node.map_keys:
        keys = node.map_keys
        by_key = {
            _canonical([item.get(k) for k in keys]): item for item in old if isinstance(item, dict)
        }
        return [
            by_key.get(_canonical([item.get(k) for k in keys]), _MISSING)
            if isinstance(item, dict)
            else _MISSING
            for item in value
        ]
    if node.list_type == "set":
        seen = {_canonical(item) for item in old}
        return [item if _canonical(item) in seen else _MISSING for item in value]
    return [_MISSING] * len(value)


def _list_type_causes(node: _Node, value: Any, path: str) -> Iterator[Cause]:
    """Duplicate keys of list-type map and duplicate items of list-type set
    (listtype.ValidateListSetsAndMaps)."""
    if not node.has_list_types:
        return
    if isinstance(value, list):
        if node.list_type == "set":
            seen: dict[str, int] = {}
            for index, item in enumerate(value):
                key = _canonical(item)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == 2:
                    yield _cause("FieldValueDuplicate", f"{path}[{index}]", item)
        elif node.list_type == "map":
            for index, item in enumerate(value):
                if item is not None and not isinstance(item, dict):
                    yield _cause(
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
                key = _canonical(key_value)
                counts[key] = counts.get(key, 0) + 1
                if counts[key] == 2:
                    yield _cause("FieldValueDuplicate", f"{path}[{index}]", key_value)
        if node.items is not None:
            for index, item in enumerate(value):
                yield from _list_type_causes(node.items, item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None:
                yield from _list_type_causes(sub, child, _join(path, name))


# --- CEL -------------------------------------------------------------------------------------


def _to_cel(node: _Node | None, value: Any) -> Any:
    """The value as the API server hands it to CEL: typed by the schema (a number field is a
    double even when written as 1)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float):
        if node is not None and node.type == "number":
            return celtypes.DoubleType(float(value))
        in_int64 = -(2**63) <= value < 2**63  # past it, JSON decodes to a float64, as in Go
        if in_int64 and (isinstance(value, int) or (node is not None and node.type == "integer")):
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = node.items if node is not None else None
        return celtypes.ListType([_to_cel(items, v) for v in value])
    if isinstance(value, dict):
        converted = {}
        for key, child in value.items():
            sub = node.properties.get(key, node.additional) if node is not None else None
            converted[celtypes.StringType(key)] = _to_cel(sub, child)
        return celtypes.MapType(converted)
    return value


def _field_path(path: str, relative: str) -> str:
    return (path + relative) if relative.startswith("[") else _join(path, relative.lstrip("."))


_OUTCOMES_SIZE = 4096
# CEL rules are pure functions of self (and oldSelf): their outcomes are memoized by value.
_outcomes: OrderedDict[tuple[int, str, str], tuple[str, str] | None] = OrderedDict()


def _outcome(rule: _Rule, node: _Node, value: Any, old: Any) -> tuple[str, str] | None:
    """None when the rule holds, else ("error", detail) or ("fail", message)."""
    key = (id(rule), _canonical(value), _canonical(old) if rule.transition else "")
    if key in _outcomes:
        _outcomes.move_to_end(key)
        return _outcomes[key]
    activation = {"self": _to_cel(node, value)}
    if rule.transition:
        activation["oldSelf"] = _to_cel(node, old)
    outcome: tuple[str, str] | None = None
    try:
        result = rule.program.evaluate(activation)
    except CELEvalError as error:
        outcome = ("error", _cel_error_text(error))
    else:
        if not (isinstance(result, celtypes.BoolType) and bool(result)):
            message = rule.message or f"failed rule: {rule.rule}"
            if rule.message_program is not None:
                try:
                    computed = rule.message_program.evaluate(activation)
                except CELEvalError:
                    computed = None
                if isinstance(computed, str) and computed.strip() and "\n" not in computed:
                    message = str(computed)
            outcome = ("fail", message)
    _outcomes[key] = outcome
    if len(_outcomes) > _OUTCOMES_SIZE:
        _outcomes.popitem(last=False)
    return outcome


def _rule_causes(node: _Node, value: Any, old: Any, path: str) -> Iterator[Cause]:
    for rule in node.rules:
        if rule.transition:
            if old is _MISSING:
                continue  # transition rules run only where the old value exists
            if rule.rule.strip() == "self == oldSelf" and value == old:
                continue  # equal JSON values are equal in CEL
        elif old is not _MISSING and value == old:
            continue  # ratcheting: an unchanged value keeps passing
        outcome = _outcome(rule, node, value, old)
        if outcome is None:
            continue
        kind, text = outcome
        if kind == "error":
            shown = f"'{rule.message.strip()}'" if rule.message.strip() else rule.rule
            yield _cause("FieldValueInvalid", path, node.type, f"{text} evaluating rule: {shown}")
            continue
        where = _field_path(path, rule.field_path) if rule.field_path else path
        reason = rule.reason or "FieldValueInvalid"
        if reason == "FieldValueDuplicate":
            yield _cause(reason, where, node.type)
        elif reason in ("FieldValueRequired", "FieldValueForbidden"):
            yield _cause(reason, where, detail=text)
        else:
            yield _cause("FieldValueInvalid", where, node.type, text)


def _cel_error_text(error: CELEvalError) -> str:
    text = str(error.args[0]) if error.args else str(error)
    match = re.search(r"no such member in mapping: '([^']*)'", str(error.args))
    if match:
        return f"no such key: {match.group(1)}"
    return text


def _cel_causes(node: _Node, value: Any, old: Any, path: str) -> Iterator[Cause]:
    if not node.has_rules or value is None:
        return
    yield from _rule_causes(node, value, old, path)
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None and sub.has_rules:
                yield from _cel_causes(sub, child, old_map.get(name, _MISSING), _join(path, name))
    elif isinstance(value, list) and node.items is not None and node.items.has_rules:
        old_items = _correlate_items(node, value, old)
        for index, item in enumerate(value):
            yield from _cel_causes(node.items, item, old_items[index], f"{path}[{index}]")


# --- admission -------------------------------------------------------------------------------


def validate(schema: Schema, obj: Any, old: Any = None) -> list[Cause]:
    """The 422 causes for an already pruned and defaulted object (empty when it is valid): the
    schema errors, list-type uniqueness, then the CEL rules unless a blocking error came first."""
    node = compiled(schema)
    old_value = _MISSING if old is None else old
    causes = list(_validate(node, obj, "", old_value))
    if node.has_list_types:
        old_errors = [] if old is None else list(_list_type_causes(node, old, ""))
        if not old_errors:  # ratcheting: a stored object that already broke them may stay so
            causes += _list_type_causes(node, obj, "")
    if node.has_rules:
        if any(c["reason"] in _BLOCKING for c in causes):
            causes.append(_cause("FieldValueInvalid", "<nil>", None, _NOT_CHECKED))
        else:
            causes += _cel_causes(node, obj, old_value, "")
    for cause in causes:
        if cause["field"] == "<nil>":
            cause["field"] = ""
    return causes


def admit(
    schema: Schema,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    *,
    field_validation: str = "Strict",
    subresource: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Prune unknown fields (keeping x-kubernetes-preserve-unknown-fields subtrees and the
    metadata of the object itself, whose unknown keys are ObjectMeta's), reject them instead
    under Strict (400, 'strict decoding error: unknown field "spec.foo"'), apply defaults,
    validate (types, required, enum, bounds, pattern, nullable, int-or-string, maxItems, list
    types...), evaluate CEL x-kubernetes-validations (transition rules with oldSelf only when
    old is given). On an update, values that did not change are not re-validated (ratcheting).
    Returns the admitted object and warnings (Warn mode); raises InvalidObject otherwise.

    `subresource` is the part being written ("status" or None); the caller has already reset
    the other part to its stored value, so it passes unchanged (ratcheting) whatever it is."""
    del subresource  # the whole object is validated either way, as the API server does
    if field_validation not in ("Strict", "Warn", "Ignore"):
        raise InvalidObject(
            [],
            code=400,
            message=f"fieldValidation must be Strict, Warn or Ignore, not {field_validation!r}",
        )
    node = compiled(schema)
    result = _copy(obj)
    unknown: list[str] = []
    _prune(result, node, "", unknown, meta=True)
    unknown.sort()
    warnings: list[str] = []
    if unknown and field_validation == "Strict":
        kind = str(obj.get("kind", ""))
        version = str(obj.get("apiVersion", "")).rpartition("/")[2]
        listed = ", ".join(f'unknown field "{p}"' for p in unknown)
        message = (
            f'{kind} in version "{version}" cannot be handled as a {kind}: '
            f"strict decoding error: {listed}"
        )
        causes = [
            {"reason": "FieldValueUnknown", "message": f'unknown field "{p}"', "field": p}
            for p in unknown
        ]
        raise InvalidObject(causes, code=400, message=message)
    if field_validation == "Warn":
        warnings = [f'unknown field "{p}"' for p in unknown]
    _prune_nulls(result, node)
    _default(result, node)
    causes = validate(schema, result, old)
    if causes:
        raise InvalidObject(causes)
    return result, warnings
