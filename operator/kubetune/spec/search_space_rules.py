"""The rules of spec.searchSpace a schema cannot express: the fields each parameter type takes,
a range low < high whose step divides it, distinct choices, and conditions on a parameter that
can take the values they name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from kubetune.spec import api, values
from kubetune.spec.bounds import ParameterValue
from kubetune.spec.problems import Problem, shown
from kubetune.spec.search_space import Parameter, ParameterType
from kubetune.spec.study import TuningStudySpec


def parameter_path(i: int, field_name: str = "") -> str:
    """spec.searchSpace[i], or one of its fields, as a Problem names it."""
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


def check_search_space(spec: TuningStudySpec) -> list[Problem]:
    """Each parameter's own rules, names that stay distinct as env vars, and conditions."""
    problems = []
    for i, parameter in enumerate(spec.search_space):
        problems.extend(_check_parameter(i, parameter))
    first_at: dict[str, int] = {}
    env_names: dict[str, int] = {}
    for i, parameter in enumerate(spec.search_space):
        if parameter.name in first_at:
            problems.append(
                Problem(
                    parameter_path(i, "name"),
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
                    parameter_path(i, "name"),
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
                    parameter_path(i, name),
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
                    parameter_path(i, "choices"),
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
                            parameter_path(i, f"choices[{j}]"),
                            f"{shown(choice)} repeats choices[{earlier}] "
                            f"({shown(p.choices[earlier])}; Optuna tells equal values apart only "
                            "by position, and true == 1)",
                            "list each choice once",
                        )
                    )
    elif p.type is ParameterType.FIXED and p.value is None:
        problems.append(
            Problem(
                parameter_path(i, "value"),
                "a fixed parameter needs value",
                "set value: <the constant>",
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
                    parameter_path(i, name),
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
                        parameter_path(i, name),
                        f"an int parameter needs a whole number (got {shown(number)})",
                        "use a whole number, or type: float",
                    )
                )
    if p.low is None or p.high is None:
        return problems
    if p.low >= p.high:
        problems.append(
            Problem(
                parameter_path(i, "low"),
                f"low ({shown(p.low)}) must be less than high ({shown(p.high)})",
                "use type: fixed for a single value" if p.low == p.high else "swap low and high",
            )
        )
    if p.log and p.low <= 0:
        problems.append(
            Problem(
                parameter_path(i, "low"),
                f"a log-scale range needs low > 0 (got {shown(p.low)})",
                "set low to a small positive number such as 1.0e-5, or remove log",
            )
        )
    if p.log and p.step is not None and not (p.type is ParameterType.INT and p.step == 1):
        problems.append(
            Problem(
                parameter_path(i, "step"),
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
                    parameter_path(i, "step"),
                    f"step {shown(p.step)} does not divide high - low "
                    f"({shown(p.high)} - {shown(p.low)})",
                    f"set high to {_number(below)} or {_number(below + step)}, "
                    "or choose a step that divides the range",
                )
            )
    return problems


_decimal = values.as_decimal


def _number(number: Decimal) -> str:
    return shown(float(number)) if number != number.to_integral_value() else str(int(number))


ChoiceKeys = Mapping[str, frozenset[tuple[str, ParameterValue]]]


def choice_keys(parameters: Sequence[Parameter]) -> ChoiceKeys:
    """The choices of each categorical parameter as a set, built once so lookups are O(1)."""
    return {
        p.name: values.value_keys(p.choices)
        for p in parameters
        if p.type is ParameterType.CATEGORICAL and p.choices is not None
    }


def impossible_value(p: Parameter, value: ParameterValue, choices: ChoiceKeys) -> str | None:
    """Why `p` can never take `value`, or None when it can (or p itself is invalid)."""
    if p.type is ParameterType.CATEGORICAL:
        if p.choices is not None and values.value_key(value) not in choices[p.name]:
            return f"it is not among the choices {shown(p.choices)}"
        return None
    if p.type is ParameterType.FIXED:
        if p.value is not None and not values.same_value(value, p.value):
            return f"the parameter is fixed at {shown(p.value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{p.name} is a {p.type.value} parameter"
    if p.type is ParameterType.INT and not float(value).is_integer():
        return f"{p.name} is an int parameter"
    if p.low is not None and p.high is not None:
        if not p.low <= value <= p.high:
            return f"it is outside [{shown(p.low)}, {shown(p.high)}]"
        step = p.step if p.step is not None else (1 if p.type is ParameterType.INT else None)
        if step is not None and not p.log and values.steps_between(p.low, value, step)[1]:
            return f"it is not low + a multiple of step {shown(step)}"
    return None


def _check_condition(spec: TuningStudySpec, i: int, p: Parameter) -> list[Problem]:
    if p.condition is None:
        return []
    names = [q.name for q in spec.search_space]
    parent = p.condition.parameter
    path = parameter_path(i, "condition.parameter")
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
    choices = choice_keys([parent_parameter])
    for j, value in enumerate(p.condition.values):
        reason = impossible_value(parent_parameter, value, choices)
        if reason is not None:
            problems.append(
                Problem(
                    parameter_path(i, f"condition.values[{j}]"),
                    f"{parent} can never be {shown(value)}: {reason}",
                    f"use a value {parent} can take, or {p.name} is never sampled",
                )
            )
    return problems
