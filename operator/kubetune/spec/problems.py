"""What is wrong with a manifest, said for the person who wrote it: a Problem names the field as
the user wrote it (camelCase, e.g. spec.searchSpace[2].low) and says the fix; pydantic's schema
errors are translated into Problems here."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetune.spec.bounds import NAME_PATTERN

_DOCS = "see docs/study-spec.md"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where (camelCase field path), what, and how to fix it."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}; fix: {self.fix}"


def problems_from_validation_error(error: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors as Problems, with camelCase paths and a fix each.

    A value that fits no member of a union (a categorical choice that is a list, say) gives one
    error per member; they are merged into one problem that lists the accepted types.
    """
    merged: dict[str, list[tuple[dict[str, Any], _Location]]] = {}
    for item in error.errors():
        where = _locate(root, item["loc"])
        merged.setdefault(where.path, []).append((dict(item), where))
    problems = []
    for path, items in merged.items():
        type_errors = [item for item, _ in items if item["type"] in _TYPE_NAMES]
        if len(type_errors) > 1 and len(type_errors) == len(items):
            expected = _join_or(_dedupe(_TYPE_NAMES[item["type"]] for item in type_errors))
            got = shown(type_errors[0]["input"])
            problems.append(Problem(path, f"must be {expected} (got {got})", f"write {expected}"))
            continue
        problems.extend(_problem_from_error(path, item, where) for item, where in items)
    return problems


_TYPE_NAMES = {
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


@dataclass(frozen=True)
class _Location:
    path: str
    owner: type[BaseModel] | None
    """The model holding the last field of the path (for its description and known fields)."""
    key_error: bool = False
    """The error is about a mapping key, not its value."""


_TAG = re.compile(r"^(function|constrained|lax|json|tagged-union)-")
"""How pydantic names a validator or union member in loc (never a field of ours)."""


def _locate(root: type[BaseModel], loc: Sequence[int | str]) -> _Location:
    """Walk the models along pydantic's loc; drop the union-member tags pydantic adds to it."""
    path = ""
    owner: type[BaseModel] | None = None
    key_error = False
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            current = _member(current, list)
            continue
        if part == "[key]":
            key_error = True
            continue
        if _TAG.match(part):
            continue
        model = _model_member(current)
        if model is not None:
            found = _field_by_alias(model, part)
            owner = model
            path += f".{part}" if path else part
            current = model.model_fields[found].annotation if found else None
            continue
        mapping = _member(current, dict)
        if mapping is not None or current is None:
            path += f".{part}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else f"[{part}]"
            current = mapping
            continue
        # A union member tag such as "bool", "int" or "function-after[...]": not in the YAML.
    return _Location(path, owner, key_error)


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_member(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _member(annotation: Any, container: type) -> Any:
    """The element type (list) or value type (dict) of the annotation's list/dict member."""
    for member in _members(annotation):
        if typing.get_origin(member) is container:
            return typing.get_args(member)[-1]
    return None


def _field_by_alias(model: type[BaseModel], alias: str) -> str | None:
    for name, info in model.model_fields.items():
        if alias in (name, info.alias):
            return name
    return None


def _known_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _problem_from_error(path: str, item: dict[str, Any], where: _Location) -> Problem:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    value = item.get("input")
    field_name = path.rsplit(".", 1)[-1]
    if kind == "missing":
        description = _description(where.owner, field_name)
        return Problem(path, "is required but missing", f"add {field_name}{description}")
    if kind == "extra_forbidden":
        known = _known_fields(where.owner) if where.owner else []
        close = difflib.get_close_matches(field_name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return Problem(
            path,
            "is not a known field",
            f"{hint}remove it or check the spelling; known fields are {', '.join(known)}",
        )
    if kind in ("enum", "literal_error"):
        return Problem(path, f"{shown(value)} is not allowed", f"use one of {ctx.get('expected')}")
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        limit_text = "zero" if limit == 0 else shown(limit)
        fix = f"use a value {words} {limit_text}"
        if path.startswith("spec.budget.") and kind == "greater_than":
            fix += _leave_out(where, path)
        return Problem(path, f"must be {words} {limit_text} (got {shown(value)})", fix)
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        if field_name == "containers":
            return Problem(
                path,
                "the trial template has no containers",
                "add the trainer container (name, image, command); the first container is "
                "the trainer",
            )
        return Problem(path, f"must have at least {least} item(s)", f"add at least {least} item(s)")
    if kind == "too_long":
        return Problem(
            path,
            f"has {ctx.get('actual_length')} items, more than the {ctx.get('max_length')} allowed",
            f"keep at most {ctx.get('max_length')}",
        )
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern")
        what = "key" if where.key_error else "value"
        if pattern == NAME_PATTERN:
            return Problem(
                path,
                f"{shown(value)} is not a valid name",
                "use letters, digits and underscores, starting with a letter or underscore "
                "(it becomes an environment variable name)",
            )
        if "ms|s|m|h" in str(pattern):
            return Problem(
                path,
                f"{shown(value)} is not a duration",
                'write a number and a unit (ms, s, m, h), such as "90s", "30m" or "1h30m"',
            )
        return Problem(
            path, f"the {what} {shown(value)} does not match {pattern}", f"match {pattern}"
        )
    if kind in ("string_too_short", "string_too_long"):
        return Problem(path, item["msg"].lower(), "change its length")
    if kind in _TYPE_NAMES:
        expected = _TYPE_NAMES[kind]
        fix = f"write {expected}"
        if isinstance(value, bool) and kind == "string_type":
            fix = "quote it: YAML reads an unquoted y, n, yes, no, on or off as a boolean"
        return Problem(path, f"must be {expected} (got {shown(value)})", fix)
    if kind == "value_error":
        message = str(ctx.get("error", item["msg"]))
        if "must be longer than zero" in message:
            return Problem(
                path,
                f"{message} (a duration must be greater than zero)",
                'use a positive duration such as "30m", or leave the field out for no limit',
            )
        if ": " in message:
            what, fix = message.split(": ", 1)
            return Problem(path, what, fix)
        return Problem(path, message, _DOCS)
    return Problem(path, item["msg"], _DOCS)


def _leave_out(where: _Location, path: str) -> str:
    """What leaving an optional field out means ("" for a required field)."""
    owner = where.owner
    name = _field_by_alias(owner, path.rsplit(".", 1)[-1]) if owner else None
    if owner is None or name is None or owner.model_fields[name].is_required():
        return ""
    default = owner.model_fields[name].default
    meaning = "no limit" if default is None else f"the default ({shown(default)})"
    return f", or leave the field out for {meaning}"


def _description(model: type[BaseModel] | None, alias: str) -> str:
    if model is None:
        return ""
    name = _field_by_alias(model, alias)
    text = model.model_fields[name].description if name else None
    if not text:
        return ""
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return f" ({first})"


def shown(value: Any) -> str:
    """A value as it looks in YAML/JSON, shortened."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)  # as the user most likely wrote it: low: 1, not 1.0
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join_or(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _dedupe(items: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(items))
    if "a number" in names and "an integer" in names:
        names.remove("an integer")
    return names
