"""Validation of TuningStudy manifests: the schema's errors and every rule a schema cannot express.

`kubetune validate` (offline) and the controller (before a study starts, and on each update) use
the same functions, so a manifest that validates here is one the operator accepts. Every problem
names the field as the user wrote it (camelCase, e.g. spec.searchSpace[2].low) and says the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from kubetune.spec import api, promql, values
from kubetune.spec.duration import parse_duration
from kubetune.spec.study import (
    ALGORITHM_SETTINGS,
    IMMUTABLE_SPEC_FIELDS,
    MAX_GRID_POINTS,
    MAX_GRID_POINTS_PER_PARAMETER,
    NAME_PATTERN,
    PATIENCE_SETTINGS,
    PROMETHEUS_URL_PATTERN,
    PRUNER_SETTINGS,
    SINGLE_OBJECTIVE_ALGORITHMS,
    STUDY_NAME_PATTERN,
    Algorithm,
    AlgorithmName,
    Parameter,
    ParameterType,
    ParameterValue,
    Pruner,
    PrunerName,
    Reevaluation,
    TuningStudy,
    TuningStudySpec,
)

PARAM_REFERENCE = re.compile(api.PARAM_PLACEHOLDER)

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


@dataclass(frozen=True)
class Report:
    """The problems of one document: `source` is the file, plus #N in a multi-document file."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


# --- reading YAML ----------------------------------------------------------------------------


class ManifestLoader(yaml.SafeLoader):
    """yaml.SafeLoader reading numbers as kubectl does, and refusing duplicate keys.

    PyYAML (YAML 1.1) reads `1e-5` as a string while kubectl's YAML reader reads a number; a
    learning rate choice written that way must mean the same here and in the cluster. kubectl's
    reader also takes y, Y, n and N for booleans (`- name: y` is not a string there). A key
    written twice silently keeps the last value in PyYAML; kubectl refuses it, and so do we.
    """

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^[yYnN]$"), list("yYnN")
)
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def validate_files(paths: Iterable[Path]) -> list[Report]:
    """One report per TuningStudy document in the files (one per file when it cannot be read)."""
    reports: list[Report] = []
    for path in paths:
        reports.extend(validate_file(path))
    return reports


def validate_file(path: Path) -> list[Report]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Report(source, [Problem("", "file not found", "check the path")])]
    except (OSError, UnicodeDecodeError) as error:
        return [Report(source, [Problem("", f"cannot read the file: {error}", "check the path")])]
    return validate_text(text, source)


def validate_text(text: str, source: str) -> list[Report]:
    """Reports for each non-empty document of a YAML stream; a syntax error ends the stream."""
    documents: list[tuple[int, Any]] = []
    syntax_error: Problem | None = None
    try:
        for number, document in enumerate(yaml.load_all(text, Loader=ManifestLoader), start=1):
            if document is not None:
                documents.append((number, document))
    except yaml.YAMLError as error:
        syntax_error = _yaml_problem(error)
    several = len(documents) + (syntax_error is not None) > 1
    reports = [
        Report(f"{source}#{number}" if several else source, parse_study(document)[1])
        for number, document in documents
    ]
    if syntax_error is not None:
        reports.append(Report(source, [syntax_error]))
    elif not reports:
        reports.append(
            Report(source, [Problem("", "the file holds no YAML document", "add a TuningStudy")])
        )
    return reports


def _yaml_problem(error: yaml.YAMLError) -> Problem:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{context}: {problem}" if context else problem
    return Problem(
        "",
        f"YAML syntax error{where}: {detail}",
        "correct the YAML there (indentation, quoting, a missing colon or a duplicate key)",
    )


# --- parsing ---------------------------------------------------------------------------------


def parse_study(document: Mapping[str, Any]) -> tuple[TuningStudy | None, list[Problem]]:
    """The study and its problems: schema errors first; the semantic rules once it parses."""
    if not isinstance(document, Mapping):
        return None, [
            Problem(
                "",
                f"the document is a {type(document).__name__}, not a mapping",
                "write a TuningStudy manifest (apiVersion, kind, metadata, spec)",
            )
        ]
    kind = document.get("kind")
    if kind != api.STUDY_KIND:
        return None, [
            Problem(
                "kind",
                f"is {kind!r}, not {api.STUDY_KIND}"
                if kind is not None
                else "is missing (this document is not a TuningStudy)",
                f"set kind: {api.STUDY_KIND} and apiVersion: {api.API_VERSION}, or keep "
                "other kinds of objects out of the files given to kubetune validate",
            )
        ]
    try:
        study = TuningStudy.model_validate(document)
    except ValidationError as error:
        return None, problems_from_validation_error(error, TuningStudy)
    except (RecursionError, MemoryError, OverflowError, ArithmeticError) as error:
        return None, [_unchecked("", error)]
    problems: list[Problem] = []
    if not study.metadata.name and not (study.metadata.model_extra or {}).get("generateName"):
        problems.append(
            Problem("metadata.name", "is missing", "name the study: metadata.name: my-study")
        )
    elif len(study.metadata.name or "") > api.MAX_STUDY_NAME_LENGTH:
        problems.append(
            Problem(
                "metadata.name",
                f"has {len(study.metadata.name or '')} characters, more than "
                f"{api.MAX_STUDY_NAME_LENGTH}: it is the value of the {api.STUDY_LABEL} label on "
                "each trial and pod, and label values are limited to 63",
                f"choose a name of at most {api.MAX_STUDY_NAME_LENGTH} characters",
            )
        )
    try:
        problems.extend(check_study_spec(study.spec))
        problems.extend(_check_from_studies(study))
    except Exception as error:
        problems.append(_unchecked("spec", error))
    return study, problems


def _unchecked(path: str, error: BaseException) -> Problem:
    # Every rule should report its own limits; this says which one did not, instead of a crash.
    return Problem(
        path,
        f"could not be checked ({type(error).__name__}: {str(error)[:200]})",
        "keep values within the documented bounds (docs/study-spec.md); please report this",
    )


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
            got = _show(type_errors[0]["input"])
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
        return Problem(path, f"{_show(value)} is not allowed", f"use one of {ctx.get('expected')}")
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        limit_text = "zero" if limit == 0 else _show(limit)
        fix = f"use a value {words} {limit_text}"
        if path.startswith("spec.budget.") and kind == "greater_than":
            fix += _leave_out(where, path)
        return Problem(path, f"must be {words} {limit_text} (got {_show(value)})", fix)
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
                f"{_show(value)} is not a valid name",
                "use letters, digits and underscores, starting with a letter or underscore "
                "(it becomes an environment variable name)",
            )
        if "ms|s|m|h" in str(pattern):
            return Problem(
                path,
                f"{_show(value)} is not a duration",
                'write a number and a unit (ms, s, m, h), such as "90s", "30m" or "1h30m"',
            )
        return Problem(
            path, f"the {what} {_show(value)} does not match {pattern}", f"match {pattern}"
        )
    if kind in ("string_too_short", "string_too_long"):
        return Problem(path, item["msg"].lower(), "change its length")
    if kind in _TYPE_NAMES:
        expected = _TYPE_NAMES[kind]
        fix = f"write {expected}"
        if isinstance(value, bool) and kind == "string_type":
            fix = "quote it: YAML reads an unquoted y, n, yes, no, on or off as a boolean"
        return Problem(path, f"must be {expected} (got {_show(value)})", fix)
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
    meaning = "no limit" if default is None else f"the default ({_show(default)})"
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


def _show(value: Any) -> str:
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


# --- semantic rules --------------------------------------------------------------------------


def check_study_spec(spec: TuningStudySpec) -> list[Problem]:
    """Every rule the schema cannot express; all problems, not only the first."""
    return [
        *_check_objective(spec),
        *_check_search_space(spec),
        *_check_algorithm(spec),
        *_check_pruner(spec),
        *_check_budget(spec),
        *_check_warm_start(spec),
        *_check_reevaluation(spec),
        *_check_template(spec),
        *_check_metrics_source(spec),
    ]


def _check_objective(spec: TuningStudySpec) -> list[Problem]:
    problems = []
    first_at: dict[str, int] = {}
    for i, metric in enumerate(spec.objective.metrics):
        if metric.name in first_at:
            problems.append(
                Problem(
                    f"spec.objective.metrics[{i}].name",
                    f"{metric.name!r} is already metrics[{first_at[metric.name]}]",
                    "list each objective metric once",
                )
            )
        first_at.setdefault(metric.name, i)
    seen: set[str] = set()
    for i, name in enumerate(spec.objective.additional_metrics):
        path = f"spec.objective.additionalMetrics[{i}]"
        if name in first_at:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is already an objective metric",
                    "remove it from additionalMetrics; objective metrics are always recorded",
                )
            )
        elif name in seen:
            problems.append(Problem(path, f"{name!r} is listed twice", "list it once"))
        seen.add(name)
    return problems


def _param(i: int, field_name: str = "") -> str:
    return f"spec.searchSpace[{i}]" + (f".{field_name}" if field_name else "")


_RANGE_FIELDS = ("low", "high", "log", "step")
_APPLICABLE_FIELDS = {
    ParameterType.FLOAT: frozenset(_RANGE_FIELDS),
    ParameterType.INT: frozenset(_RANGE_FIELDS),
    ParameterType.CATEGORICAL: frozenset({"choices"}),
    ParameterType.FIXED: frozenset({"value"}),
}


def _is_set(parameter: Parameter, name: str) -> bool:
    # log defaults to false (and the API server may write that default): only true counts.
    value = getattr(parameter, name)
    return value is True if name == "log" else value is not None


def _check_search_space(spec: TuningStudySpec) -> list[Problem]:
    problems = []
    for i, parameter in enumerate(spec.search_space):
        problems.extend(_check_parameter(i, parameter))
    first_at: dict[str, int] = {}
    env_names: dict[str, int] = {}
    for i, parameter in enumerate(spec.search_space):
        if parameter.name in first_at:
            problems.append(
                Problem(
                    _param(i, "name"),
                    f"{parameter.name!r} is already searchSpace[{first_at[parameter.name]}].name",
                    "give each parameter its own name",
                )
            )
            continue
        first_at[parameter.name] = i
        env = api.PARAM_ENV_PREFIX + parameter.name.upper()
        if env in env_names:
            other = spec.search_space[env_names[env]].name
            problems.append(
                Problem(
                    _param(i, "name"),
                    f"{parameter.name!r} and {other!r} both become the env var {env}",
                    "give parameters names that differ by more than letter case",
                )
            )
        env_names.setdefault(env, i)
    for i, parameter in enumerate(spec.search_space):
        problems.extend(_check_condition(spec, i, parameter))
    return problems


def _check_parameter(i: int, p: Parameter) -> list[Problem]:
    problems = []
    applicable = _APPLICABLE_FIELDS[p.type]
    for name in ("low", "high", "log", "step", "choices", "value"):
        if name not in applicable and _is_set(p, name):
            owners = [t.value for t, fields in _APPLICABLE_FIELDS.items() if name in fields]
            problems.append(
                Problem(
                    _param(i, name),
                    f"does not apply to a {p.type.value} parameter",
                    f"remove it ({name} is for {' and '.join(owners)} parameters)",
                )
            )
    if p.type in (ParameterType.FLOAT, ParameterType.INT):
        problems.extend(_check_range(i, p))
    elif p.type is ParameterType.CATEGORICAL:
        if p.choices is None:
            problems.append(
                Problem(
                    _param(i, "choices"),
                    "a categorical parameter needs choices",
                    "list the values to choose from, e.g. choices: [sgd, adam]",
                )
            )
        else:
            # One pass with a dict: Optuna tells equal values apart only by position, and
            # true == 1 for it (so plain ==, not same_value).
            first_at: dict[ParameterValue, int] = {}
            for j, choice in enumerate(p.choices):
                earlier = first_at.setdefault(choice, j)
                if earlier != j:
                    problems.append(
                        Problem(
                            _param(i, f"choices[{j}]"),
                            f"{_show(choice)} repeats choices[{earlier}] "
                            f"({_show(p.choices[earlier])}; Optuna tells equal values apart only "
                            "by position, and true == 1)",
                            "list each choice once",
                        )
                    )
    elif p.type is ParameterType.FIXED and p.value is None:
        problems.append(
            Problem(
                _param(i, "value"), "a fixed parameter needs value", "set value: <the constant>"
            )
        )
    return problems


def _check_range(i: int, p: Parameter) -> list[Problem]:
    problems = []
    kind = p.type.value
    for name in ("low", "high"):
        if getattr(p, name) is None:
            problems.append(
                Problem(
                    _param(i, name),
                    f"a {kind} parameter needs {name}",
                    f"set {name} (the {'lower' if name == 'low' else 'upper'} bound, inclusive)",
                )
            )
    whole = True
    if p.type is ParameterType.INT:
        for name in ("low", "high", "step"):
            number = getattr(p, name)
            if number is not None and not float(number).is_integer():
                whole = False
                problems.append(
                    Problem(
                        _param(i, name),
                        f"an int parameter needs a whole number (got {_show(number)})",
                        "use a whole number, or type: float",
                    )
                )
    if p.low is None or p.high is None:
        return problems
    if p.low >= p.high:
        problems.append(
            Problem(
                _param(i, "low"),
                f"low ({_show(p.low)}) must be less than high ({_show(p.high)})",
                "use type: fixed for a single value" if p.low == p.high else "swap low and high",
            )
        )
    if p.log and p.low <= 0:
        problems.append(
            Problem(
                _param(i, "low"),
                f"a log-scale range needs low > 0 (got {_show(p.low)})",
                "set low to a small positive number such as 1.0e-5, or remove log",
            )
        )
    if p.log and p.step is not None and not (p.type is ParameterType.INT and p.step == 1):
        problems.append(
            Problem(
                _param(i, "step"),
                "log and step cannot be combined (Optuna refuses a stepped log scale)",
                "remove step, or remove log",
            )
        )
    elif p.step is not None and p.low < p.high and whole:
        steps, rest = values.steps_between(p.low, p.high, p.step)
        if rest != 0:
            step = _decimal(p.step)
            below = _decimal(p.low) + steps * step
            problems.append(
                Problem(
                    _param(i, "step"),
                    f"step {_show(p.step)} does not divide high - low "
                    f"({_show(p.high)} - {_show(p.low)})",
                    f"set high to {_number(below)} or {_number(below + step)}, "
                    "or choose a step that divides the range",
                )
            )
    return problems


_decimal = values.as_decimal


def _number(number: Decimal) -> str:
    return _show(float(number)) if number != number.to_integral_value() else str(int(number))


_ChoiceKeys = Mapping[str, frozenset[tuple[str, ParameterValue]]]


def _choice_keys(parameters: Sequence[Parameter]) -> _ChoiceKeys:
    """The choices of each categorical parameter as a set, built once so lookups are O(1)."""
    return {
        p.name: values.value_keys(p.choices)
        for p in parameters
        if p.type is ParameterType.CATEGORICAL and p.choices is not None
    }


def _impossible(p: Parameter, value: ParameterValue, choices: _ChoiceKeys) -> str | None:
    """Why `p` can never take `value`, or None when it can (or p itself is invalid)."""
    if p.type is ParameterType.CATEGORICAL:
        if p.choices is not None and values.value_key(value) not in choices[p.name]:
            return f"it is not among the choices {_show(p.choices)}"
        return None
    if p.type is ParameterType.FIXED:
        if p.value is not None and not values.same_value(value, p.value):
            return f"the parameter is fixed at {_show(p.value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{p.name} is a {p.type.value} parameter"
    if p.type is ParameterType.INT and not float(value).is_integer():
        return f"{p.name} is an int parameter"
    if p.low is not None and p.high is not None:
        if not p.low <= value <= p.high:
            return f"it is outside [{_show(p.low)}, {_show(p.high)}]"
        step = p.step if p.step is not None else (1 if p.type is ParameterType.INT else None)
        if step is not None and not p.log and values.steps_between(p.low, value, step)[1]:
            return f"it is not low + a multiple of step {_show(step)}"
    return None


def _check_condition(spec: TuningStudySpec, i: int, p: Parameter) -> list[Problem]:
    if p.condition is None:
        return []
    names = [q.name for q in spec.search_space]
    parent = p.condition.parameter
    path = _param(i, "condition.parameter")
    if parent == p.name:
        return [
            Problem(path, "a parameter cannot depend on itself", "name a parameter listed earlier")
        ]
    if parent not in names:
        return [
            Problem(
                path,
                f"{parent!r} is not a parameter of searchSpace",
                f"name a parameter listed earlier: {', '.join(names[:i]) or '(none)'}",
            )
        ]
    k = names.index(parent)
    if k > i:
        return [
            Problem(
                path,
                f"{parent!r} is listed later (searchSpace[{k}]); a condition may only name an "
                "earlier parameter, which rules out cycles",
                f"move {parent} above {p.name} in searchSpace",
            )
        ]
    problems = []
    parent_parameter = spec.search_space[k]
    choices = _choice_keys([parent_parameter])
    for j, value in enumerate(p.condition.values):
        reason = _impossible(parent_parameter, value, choices)
        if reason is not None:
            problems.append(
                Problem(
                    _param(i, f"condition.values[{j}]"),
                    f"{parent} can never be {_show(value)}: {reason}",
                    f"use a value {parent} can take, or {p.name} is never sampled",
                )
            )
    return problems


def _camel_settings(names: Iterable[str]) -> str:
    return ", ".join(sorted(to_camel(name) for name in names))


def _check_algorithm(spec: TuningStudySpec) -> list[Problem]:
    algorithm = spec.algorithm
    name = algorithm.name
    problems = []
    for setting in Algorithm.model_fields:
        if setting in ("name", "seed") or getattr(algorithm, setting) is None:
            continue
        if setting not in ALGORITHM_SETTINGS[name]:
            users = [a.value for a, allowed in ALGORITHM_SETTINGS.items() if setting in allowed]
            problems.append(
                Problem(
                    f"spec.algorithm.{to_camel(setting)}",
                    f"does not apply to algorithm {name.value}",
                    f"remove it (it applies to {', '.join(users)}); settings of "
                    f"{name.value}: {_camel_settings(ALGORITHM_SETTINGS[name]) or 'none'}",
                )
            )
    objectives = len(spec.objective.metrics)
    if name in SINGLE_OBJECTIVE_ALGORITHMS and objectives > 1:
        others = [a.value for a in AlgorithmName if a not in SINGLE_OBJECTIVE_ALGORITHMS]
        problems.append(
            Problem(
                "spec.algorithm.name",
                f"{name.value} optimizes a single objective, and spec.objective.metrics "
                f"lists {objectives}",
                f"use {', '.join(others)} for several objectives, or keep one metric and move "
                "the others to additionalMetrics",
            )
        )
    if name is AlgorithmName.TPE and algorithm.group and algorithm.multivariate is False:
        problems.append(
            Problem(
                "spec.algorithm.group",
                "group needs multivariate (Optuna refuses group without it)",
                "remove multivariate: false, or remove group",
            )
        )
    if name is AlgorithmName.CMAES and algorithm.separable and algorithm.with_margin:
        problems.append(
            Problem(
                "spec.algorithm.withMargin",
                "separable CMA-ES with margin is not supported by Optuna",
                "set only one of separable and withMargin",
            )
        )
    if name is AlgorithmName.GRID:
        problems.extend(_check_grid_size(spec))
        for i, p in enumerate(spec.search_space):
            ranged = p.type in (ParameterType.FLOAT, ParameterType.INT)
            points = values.grid_points(p) if ranged else None
            if points is not None and points > MAX_GRID_POINTS_PER_PARAMETER:
                problems.append(
                    Problem(
                        _param(i, "step"),
                        f"{p.name} has {points if points < 10**15 else 'over 10^15'} grid "
                        f"points, more than "
                        f"{MAX_GRID_POINTS_PER_PARAMETER} (an int range without a step?)",
                        "set a larger step, or use another algorithm (tpe, random, qmc)",
                    )
                )
            if p.type is ParameterType.FLOAT and p.step is None:
                problems.append(
                    Problem(
                        _param(i),
                        f"grid needs a finite set of values, and {p.name} is a continuous float",
                        "add a step (without log), list its values as categorical choices, or "
                        "use another algorithm (tpe, random, qmc)",
                    )
                )
            if p.condition is not None:
                problems.append(
                    Problem(
                        _param(i, "condition"),
                        "grid cannot search conditional parameters (it enumerates one fixed "
                        "product of values)",
                        "remove the condition, or use another algorithm (tpe, random)",
                    )
                )
    return problems


def _check_grid_size(spec: TuningStudySpec) -> list[Problem]:
    """The grid's size as a product of its axes' sizes, stopping once it is too large."""
    size = 1
    for p in spec.search_space:
        points = values.grid_points(p)
        ranged = p.type in (ParameterType.FLOAT, ParameterType.INT)
        if points is None or (ranged and points > MAX_GRID_POINTS_PER_PARAMETER):
            return []  # that axis is a problem of its own, reported with its field
        size *= points
        if size > MAX_GRID_POINTS:
            return [
                Problem(
                    "spec.searchSpace",
                    f"the grid has more than {MAX_GRID_POINTS} points (the product of every "
                    "parameter's values), more than a study could ever run",
                    "use larger steps or fewer choices, or another algorithm (tpe, random, qmc)",
                )
            ]
    return []


def _check_pruner(spec: TuningStudySpec) -> list[Problem]:
    pruner = spec.pruner
    name = pruner.name
    problems = []
    objectives = len(spec.objective.metrics)
    if name is not PrunerName.NONE and objectives > 1:
        problems.append(
            Problem(
                "spec.pruner.name",
                f"pruning needs a single objective (Optuna does not take intermediate reports "
                f"of multi-objective studies), and spec.objective.metrics lists {objectives}",
                "set pruner name: none, or keep one objective metric",
            )
        )
    allowed = PRUNER_SETTINGS[name] | (PATIENCE_SETTINGS if name is not PrunerName.NONE else set())
    for setting in Pruner.model_fields:
        if setting == "name" or getattr(pruner, setting) is None or setting in allowed:
            continue
        if name is PrunerName.NONE and setting in PATIENCE_SETTINGS:
            fix = "set pruner name: patient to prune on patience alone, or remove it"
        else:
            users = [p.value for p, fields in PRUNER_SETTINGS.items() if setting in fields]
            if setting in PATIENCE_SETTINGS:
                users = ["every pruner but none"]
            fix = (
                f"remove it (it applies to {', '.join(users)}); settings of {name.value}: "
                f"{_camel_settings(allowed) or 'none'}"
            )
        problems.append(
            Problem(
                f"spec.pruner.{to_camel(setting)}", f"does not apply to pruner {name.value}", fix
            )
        )
    if name is PrunerName.PERCENTILE and pruner.percentile is None:
        problems.append(
            Problem(
                "spec.pruner.percentile",
                "the percentile pruner needs percentile",
                "set percentile (0-100), e.g. 25 prunes trials below the best quarter",
            )
        )
    if name is PrunerName.PATIENT and pruner.patience is None:
        problems.append(
            Problem(
                "spec.pruner.patience",
                "the patient pruner needs patience",
                "set patience: the steps without improvement after which a trial is pruned",
            )
        )
    if name is PrunerName.THRESHOLD:
        if pruner.lower is None and pruner.upper is None:
            problems.append(
                Problem(
                    "spec.pruner",
                    "the threshold pruner needs lower or upper",
                    "set lower, upper or both: a trial reporting a value outside is pruned",
                )
            )
        elif pruner.lower is not None and pruner.upper is not None and pruner.lower > pruner.upper:
            problems.append(
                Problem(
                    "spec.pruner.lower",
                    f"lower ({_show(pruner.lower)}) is above upper ({_show(pruner.upper)}), "
                    "so every trial would be pruned",
                    "swap lower and upper",
                )
            )
    if (
        name is PrunerName.HYPERBAND
        and pruner.min_resource is not None
        and pruner.max_resource is not None
        and pruner.min_resource > pruner.max_resource
    ):
        problems.append(
            Problem(
                "spec.pruner.minResource",
                f"minResource ({pruner.min_resource}) is above maxResource ({pruner.max_resource})",
                "set minResource at most maxResource",
            )
        )
    return problems


def _check_budget(spec: TuningStudySpec) -> list[Problem]:
    budget = spec.budget
    problems = []
    if budget.trial_timeout is None and (budget.max_gpu_hours is not None or budget.money):
        which = "maxGpuHours" if budget.max_gpu_hours is not None else "money"
        problems.append(
            Problem(
                "spec.budget.trialTimeout",
                f"is required with {which}: a trial starts only when its worst case "
                "(trialTimeout x GPUs x price) fits in what remains, and without trialTimeout a "
                "trial's worst case is unbounded",
                "set trialTimeout to the longest a trial may run, e.g. 2h",
            )
        )
    prices = budget.money.price_per_gpu_hour if budget.money else {}
    try:
        gpus = spec.trial_template.gpu_resources(prices)
    except ValueError as error:
        return [
            *problems,
            Problem(
                "spec.trialTemplate.spec.containers",
                f"GPU resource {error}",
                "request GPUs as a whole number, e.g. nvidia.com/gpu: 1",
            ),
        ]
    if budget.max_gpu_hours is not None and not gpus:
        problems.append(
            Problem(
                "spec.budget.maxGpuHours",
                "is set but the trial template requests no GPU, so it would never count anything",
                "request GPUs in the trainer container (resources.limits, e.g. "
                "nvidia.com/gpu: 1), or remove maxGpuHours",
            )
        )
    if budget.money is not None:
        requested = set(gpus)
        if not requested.intersection(budget.money.price_per_gpu_hour):
            problems.append(
                Problem(
                    "spec.budget.money.pricePerGpuHour",
                    f"prices {', '.join(sorted(budget.money.price_per_gpu_hour))}, which the "
                    "trial template does not request "
                    f"(it requests {', '.join(sorted(requested)) or 'nothing'}), so the money "
                    "budget would never count anything",
                    "key the price by the GPU resource the trainer container requests "
                    "(e.g. nvidia.com/gpu under resources.limits)",
                )
            )
    return problems


def _check_warm_start(spec: TuningStudySpec) -> list[Problem]:
    if spec.warm_start is None:
        return []
    problems = []
    searched = [p.name for p in spec.search_space if p.type is not ParameterType.FIXED]
    choices = _choice_keys(spec.search_space)
    for i, configuration in enumerate(spec.warm_start.configurations):
        path = f"spec.warmStart.configurations[{i}]"
        problems.extend(_check_params(spec, path, configuration, choices))
        missing = [name for name in searched if name not in configuration]
        if spec.algorithm.name is AlgorithmName.GRID and missing:
            problems.append(
                Problem(
                    path,
                    "grid search needs every parameter in a configuration, and this one "
                    f"lacks {', '.join(missing)}",
                    f"add {', '.join(missing)}",
                )
            )
    objectives = [m.name for m in spec.objective.metrics]
    for i, result in enumerate(spec.warm_start.results):
        path = f"spec.warmStart.results[{i}]"
        problems.extend(_check_params(spec, f"{path}.params", result.params, choices))
        if len(result.values) != len(objectives):
            problems.append(
                Problem(
                    f"{path}.values",
                    f"has {len(result.values)} value(s), and the study has {len(objectives)} "
                    f"objective(s) ({', '.join(objectives)})",
                    "give one value per objective metric, in the order of spec.objective.metrics",
                )
            )
        for j, value in enumerate(result.values):
            if not math.isfinite(value):
                problems.append(
                    Problem(
                        f"{path}.values[{j}]",
                        f"{value} is not a finite number",
                        "leave out results that failed or diverged",
                    )
                )
    return problems


def _check_from_studies(study: TuningStudy) -> list[Problem]:
    """Each source study named once, and not this study: the rest (it exists, it optimizes
    the same objective) depends on the cluster, and kubetune.controller.warm_start checks it."""
    if study.spec.warm_start is None:
        return []
    problems = []
    first_at: dict[str, int] = {}
    for i, name in enumerate(study.spec.warm_start.from_studies):
        path = f"spec.warmStart.fromStudies[{i}]"
        if not re.fullmatch(STUDY_NAME_PATTERN, name):
            problems.append(
                Problem(
                    path,
                    f"{_show(name)} is not a study name: lower-case letters, digits, '-' and "
                    "'.', beginning and ending with a letter or digit",
                    "write the metadata.name of a TuningStudy of this namespace",
                )
            )
        elif name == study.metadata.name:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is this study: a study cannot learn from its own trials",
                    "name another study of this namespace, or remove the entry",
                )
            )
        elif name in first_at:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is already fromStudies[{first_at[name]}]",
                    "list each study once",
                )
            )
        first_at.setdefault(name, i)
    return problems


def _check_params(
    spec: TuningStudySpec, path: str, params: Mapping[str, ParameterValue], choices: _ChoiceKeys
) -> list[Problem]:
    by_name = {p.name: p for p in spec.search_space}
    problems = []
    for name, value in params.items():
        where = f"{path}.{name}"
        parameter = by_name.get(name)
        if parameter is None:
            problems.append(
                Problem(
                    where,
                    f"{name!r} is not a parameter of searchSpace",
                    f"remove it or use one of {', '.join(by_name)}",
                )
            )
            continue
        reason = _impossible(parameter, value, choices)
        if reason is not None:
            problems.append(
                Problem(
                    where,
                    f"{_show(value)} is not a value {name} can take: {reason}",
                    "use a value inside the search space",
                )
            )
        condition = parameter.condition
        if condition is not None and condition.parameter in params:
            parent_value = params[condition.parameter]
            if values.value_key(parent_value) not in values.value_keys(condition.values):
                problems.append(
                    Problem(
                        where,
                        f"{name} is sampled only when {condition.parameter} is one of "
                        f"{_show(condition.values)}, and here it is {_show(parent_value)}",
                        f"remove {name} from this entry, or change {condition.parameter}",
                    )
                )
    return problems


def _check_reevaluation(spec: TuningStudySpec) -> list[Problem]:
    reevaluation = spec.reevaluation
    if reevaluation is None:
        return []
    path = "spec.reevaluation"
    objective = spec.objective
    metric = reevaluation.metric
    problems = []
    if objective.is_multi_objective and (metric is not None or reevaluation.direction):
        which = "metric" if metric is not None else "direction"
        problems.append(
            Problem(
                f"{path}.{which}",
                "applies to single-objective studies: a multi-objective study re-evaluates "
                "its Pareto front on every objective",
                f"remove {which}",
            )
        )
    elif metric is not None:
        objectives = {m.name: m.direction for m in objective.metrics}
        if metric not in objectives and metric not in objective.additional_metrics:
            problems.append(
                Problem(
                    f"{path}.metric",
                    f"{metric!r} is not a metric the study records",
                    f"add {metric!r} to spec.objective.additionalMetrics (what the trainer "
                    "reports in its final report), or name an objective metric",
                )
            )
        direction = reevaluation.direction
        if metric in objectives and direction is not None and direction != objectives[metric]:
            problems.append(
                Problem(
                    f"{path}.direction",
                    f"is {direction.value}, but the objective {metric!r} is "
                    f"{objectives[metric].value}d",
                    "remove direction: an objective metric keeps its own",
                )
            )
    elif reevaluation.direction is not None:
        problems.append(
            Problem(
                f"{path}.direction",
                "applies to `metric`, which is not set (the objective keeps its own direction)",
                "remove direction, or set metric to the held-out metric it ranks",
            )
        )
    problems.extend(_check_reevaluation_budget(spec, reevaluation))
    return problems


def _check_reevaluation_budget(spec: TuningStudySpec, reevaluation: Reevaluation) -> list[Problem]:
    """The GPU-hour and money budgets reserve the re-evaluation's worst case before the search
    may start a trial: a budget too small for both is a mistake to name now, not a study that
    ends at its first reconcile."""
    budget = spec.budget
    if budget.trial_timeout is None:
        return []  # _check_budget requires it with maxGpuHours or money
    prices = budget.money.price_per_gpu_hour if budget.money else {}
    try:
        gpus = spec.trial_template.gpu_resources(prices)
    except ValueError:
        return []  # _check_budget names the amount
    runs = reevaluation.top_trials * reevaluation.repeats
    worst_hours = (
        parse_duration(budget.trial_timeout) + spec.trial_template.spec.stop_seconds
    ) / 3600
    limits = []
    if budget.max_gpu_hours is not None:
        limits.append(("maxGpuHours", budget.max_gpu_hours, float(sum(gpus.values())), "GPU-hours"))
    if budget.money is not None:
        per_hour = spec.trial_template.money_per_hour(prices)
        limits.append(("money.limit", budget.money.limit, per_hour, budget.money.currency))
    problems = []
    for name, limit, per_hour, unit in limits:
        reserved = runs * worst_hours * per_hour
        if per_hour and reserved + worst_hours * per_hour > limit * (1 + 1e-9):
            problems.append(
                Problem(
                    f"spec.budget.{name}",
                    f"({limit:g}) cannot hold the re-evaluation's worst case ({runs} runs of "
                    f"trialTimeout and the grace period: {reserved:.4g} {unit}) and one search "
                    "trial's",
                    "raise the budget, or lower reevaluation.topTrials, reevaluation.repeats or "
                    "budget.trialTimeout",
                )
            )
    return problems


def _check_template(spec: TuningStudySpec) -> list[Problem]:
    names = [p.name for p in spec.search_space]
    known = ", ".join(f"${{params.{name}}}" for name in dict.fromkeys(names))
    problems = []
    for c, container in enumerate(spec.trial_template.spec.containers):
        base = f"spec.trialTemplate.spec.containers[{c}]"
        for part in ("command", "args"):
            for k, text in enumerate(getattr(container, part) or []):
                for reference in PARAM_REFERENCE.findall(text):
                    if reference not in names:
                        problems.append(
                            Problem(
                                f"{base}.{part}[{k}]",
                                f"${{params.{reference}}} names no parameter of searchSpace",
                                f"use one of {known}",
                            )
                        )
        for k, env in enumerate(container.env or []):
            if (
                env.name.startswith(api.RESERVED_ENV_PREFIX)
                and env.name not in api.TRAINER_SETTINGS_ENV
            ):
                problems.append(
                    Problem(
                        f"{base}.env[{k}].name",
                        f"{env.name} is reserved: Kubetune sets {api.PARAMS_ENV}, "
                        f"{api.PARAM_ENV_PREFIX}<NAME> and the other "
                        f"{api.RESERVED_ENV_PREFIX}* variables in every trial container",
                        "rename the variable, or add a fixed parameter to the search space",
                    )
                )
    return problems


def _check_metrics_source(spec: TuningStudySpec) -> list[Problem]:
    """Every recorded metric has a query; templates render safely; one CA source."""
    if spec.metrics_source is None:
        return []
    source = spec.metrics_source.prometheus
    base = "spec.metricsSource.prometheus"
    problems = []
    if not re.fullmatch(PROMETHEUS_URL_PATTERN, source.url):
        problems.append(
            Problem(
                f"{base}.url",
                f"{source.url!r} is not an http(s) URL of Prometheus",
                "write the base URL with its scheme and no query, "
                "e.g. http://prometheus-operated.monitoring:9090",
            )
        )
    objective = spec.objective
    recorded = [m.name for m in objective.metrics] + list(objective.additional_metrics)
    for name in source.queries:
        if name not in recorded:
            problems.append(
                Problem(
                    f"{base}.queries.{name}",
                    f"{name!r} is not a metric of the study",
                    f"name one of {', '.join(recorded)}, or add {name} to "
                    "spec.objective.additionalMetrics",
                )
            )
    shared = [name for name in recorded if name not in source.queries]
    if shared and source.query is None:
        problems.append(
            Problem(
                f"{base}.query",
                f"is missing, and queries has no entry for {', '.join(shared)}",
                "add query (a template naming ${metric}) or an entry in queries for each metric",
            )
        )
    if source.query is not None and len(shared) > 1 and "${metric}" not in source.query:
        problems.append(
            Problem(
                f"{base}.query",
                f"serves {len(shared)} metrics ({', '.join(shared)}) but does not name "
                "${metric}, so they would all read the same value",
                'name the metric in it, e.g. metric="${metric}", or add entries to queries',
            )
        )
    templates = [("query", source.query), ("stepQuery", source.step_query)] + [
        (f"queries.{name}", text) for name, text in source.queries.items()
    ]
    for where, text in templates:
        if text is None:
            continue
        for message in promql.check_template(text):
            what, _, fix = message.partition("; ")
            problems.append(
                Problem(f"{base}.{where}", what, fix or "see docs/study-spec.md#metricssource")
            )
    if source.ca_config_map is not None and source.ca_secret is not None:
        problems.append(
            Problem(
                f"{base}.caSecret",
                "is set together with caConfigMap",
                "keep one of caConfigMap and caSecret",
            )
        )
    return problems


# --- updates ---------------------------------------------------------------------------------


def spec_fingerprints(spec: TuningStudySpec) -> dict[str, str]:
    """A short hash of each immutable spec field (camelCase keys). The controller records them
    in status.specFingerprints when a study starts, so a later change is caught even after an
    operator restart, when the old spec is no longer at hand."""
    fingerprints = {}
    for name in IMMUTABLE_SPEC_FIELDS:
        value = getattr(spec, name)
        if isinstance(value, list):
            dumped: Any = [item.model_dump(mode="json") for item in value]
        else:
            dumped = value.model_dump(mode="json") if value is not None else None
        text = json.dumps(dumped, sort_keys=True)
        fingerprints[to_camel(name)] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return fingerprints


def immutable_changes(recorded: Mapping[str, str], new: TuningStudySpec) -> list[Problem]:
    """The immutable fields that changed since `recorded` (spec_fingerprints of the spec the
    study started with): the CRD's CEL transition rules, in code."""
    current = spec_fingerprints(new)
    return [
        Problem(
            f"spec.{field}",
            "changed, but it is immutable once the study exists: the trials already run would "
            "no longer be comparable",
            "revert it (budget and parallelism may change; these may not), or create a new study",
        )
        for field, fingerprint in current.items()
        if recorded.get(field, fingerprint) != fingerprint
    ]
