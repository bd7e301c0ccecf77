"""The search space of a study as Optuna sees it, and how one trial's parameters are asked.

Parameters are asked in searchSpace order. A conditional parameter is asked only when the
parameter it names (listed earlier) holds one of its values; otherwise the trial does not have it.
`fixed` parameters are constants: they are added to a trial's params and never given to Optuna,
so the samplers search only the free subspace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.spec.study import (
    MAX_GRID_POINTS_PER_PARAMETER,
    Parameter,
    ParameterType,
    ParameterValue,
)


def _bounds(parameter: Parameter) -> tuple[float, float]:
    if parameter.low is None or parameter.high is None:
        raise ValueError(
            f"parameter {parameter.name!r}: {parameter.type} needs low and high; set both"
        )
    return parameter.low, parameter.high


def distribution(parameter: Parameter) -> BaseDistribution:
    """The Optuna distribution of a searched (non-fixed) parameter."""
    if parameter.type is ParameterType.FLOAT:
        low, high = _bounds(parameter)
        return FloatDistribution(low, high, log=parameter.log, step=parameter.step)
    if parameter.type is ParameterType.INT:
        low, high = _bounds(parameter)
        step = 1 if parameter.step is None else int(parameter.step)
        return IntDistribution(int(low), int(high), log=parameter.log, step=step)
    if parameter.type is ParameterType.CATEGORICAL:
        if not parameter.choices:
            raise ValueError(f"parameter {parameter.name!r}: categorical needs choices")
        return CategoricalDistribution(parameter.choices)
    raise ValueError(f"parameter {parameter.name!r}: a fixed parameter has no distribution")


def distributions(search_space: Sequence[Parameter]) -> dict[str, BaseDistribution]:
    """The distributions of every searched parameter, by name (fixed parameters left out)."""
    return {p.name: distribution(p) for p in search_space if p.type is not ParameterType.FIXED}


def same_value(a: object, b: object) -> bool:
    """Equality of parameter values that keeps booleans apart from numbers (True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def condition_holds(parameter: Parameter, params: Mapping[str, ParameterValue]) -> bool:
    """Whether a parameter is active given the parameters asked before it."""
    condition = parameter.condition
    if condition is None:
        return True
    if condition.parameter not in params:
        return False
    value = params[condition.parameter]
    return any(same_value(value, v) for v in condition.values)


def coerce(parameter: Parameter, value: object) -> ParameterValue:
    """A stored value in the type its parameter has (JSON may turn 1.0 into 1 on the way)."""
    if parameter.type is ParameterType.FIXED:
        assert parameter.value is not None
        return parameter.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if parameter.type is ParameterType.FLOAT:
            return float(value)
        if parameter.type is ParameterType.INT and float(value).is_integer():
            return int(value)
    if parameter.type is ParameterType.CATEGORICAL and parameter.choices:
        for choice in parameter.choices:
            if same_value(choice, value):
                return choice
    raise ValueError(f"parameter {parameter.name!r}: {value!r} is not a value of this parameter")


def coerce_params(
    search_space: Sequence[Parameter], params: Mapping[str, object], where: str
) -> dict[str, ParameterValue]:
    """Stored params in searchSpace order and types; `where` names them in errors."""
    by_name = {p.name: p for p in search_space}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        raise ValueError(f"{where}: {unknown} are not in spec.searchSpace; remove them")
    out: dict[str, ParameterValue] = {}
    for parameter in search_space:
        if parameter.name in params:
            try:
                out[parameter.name] = coerce(parameter, params[parameter.name])
            except ValueError as error:
                raise ValueError(f"{where}.{parameter.name}: {error}") from None
    return out


def searched(
    search_space: Sequence[Parameter], params: Mapping[str, ParameterValue]
) -> tuple[dict[str, ParameterValue], dict[str, BaseDistribution]]:
    """The part of `params` Optuna knows (fixed parameters removed), with its distributions."""
    kept: dict[str, ParameterValue] = {}
    dists: dict[str, BaseDistribution] = {}
    for parameter in search_space:
        if parameter.type is ParameterType.FIXED or parameter.name not in params:
            continue
        kept[parameter.name] = params[parameter.name]
        dists[parameter.name] = distribution(parameter)
    return kept, dists


def active_searched_names(
    search_space: Sequence[Parameter], params: Mapping[str, ParameterValue]
) -> list[str]:
    """Names of the searched parameters a trial with these (partial) params would be asked."""
    names: list[str] = []
    seen: dict[str, ParameterValue] = {}
    for parameter in search_space:
        if not condition_holds(parameter, seen):
            continue
        if parameter.type is ParameterType.FIXED:
            assert parameter.value is not None
            seen[parameter.name] = parameter.value
            continue
        names.append(parameter.name)
        if parameter.name in params:
            seen[parameter.name] = params[parameter.name]
    return names


def suggest(trial: optuna.Trial, search_space: Sequence[Parameter]) -> dict[str, ParameterValue]:
    """Ask a trial's parameters in searchSpace order, honouring conditions and fixed values."""
    params: dict[str, ParameterValue] = {}
    for parameter in search_space:
        if not condition_holds(parameter, params):
            continue
        name = parameter.name
        if parameter.type is ParameterType.FIXED:
            assert parameter.value is not None
            params[name] = parameter.value
        elif parameter.type is ParameterType.FLOAT:
            low, high = _bounds(parameter)
            params[name] = trial.suggest_float(
                name, low, high, step=parameter.step, log=parameter.log
            )
        elif parameter.type is ParameterType.INT:
            low, high = _bounds(parameter)
            step = 1 if parameter.step is None else int(parameter.step)
            params[name] = trial.suggest_int(
                name, int(low), int(high), step=step, log=parameter.log
            )
        else:
            assert parameter.choices is not None
            choice = trial.suggest_categorical(name, parameter.choices)
            assert choice is not None  # choices are never null
            params[name] = choice
    return params


def grid_values(parameter: Parameter, index: int) -> list[ParameterValue]:
    """Every value of a searched parameter on a grid; `index` is its place in searchSpace."""
    where = f"spec.searchSpace[{index}]"
    if parameter.type is ParameterType.CATEGORICAL:
        assert parameter.choices is not None
        return list(parameter.choices)
    low, high = _bounds(parameter)
    if parameter.type is ParameterType.FLOAT:
        if parameter.step is None:
            raise ValueError(
                f"{where}.step: grid search needs a step for float parameter {parameter.name!r};"
                " set step, or use another algorithm"
            )
        step = Decimal(str(parameter.step))
        count = int((Decimal(str(high)) - Decimal(str(low))) / step) + 1
        _check_grid_axis(where, parameter.name, count)
        # Decimal keeps grid points exact: 0.1 + 2 * 0.1 is 0.3, not 0.30000000000000004.
        return [float(Decimal(str(low)) + i * step) for i in range(count)]
    step_int = 1 if parameter.step is None else int(parameter.step)
    count = (int(high) - int(low)) // step_int + 1
    _check_grid_axis(where, parameter.name, count)
    return list(range(int(low), int(high) + 1, step_int))


def _check_grid_axis(where: str, name: str, count: int) -> None:
    if count > MAX_GRID_POINTS_PER_PARAMETER:
        raise ValueError(
            f"{where}: parameter {name!r} has {count} grid points, more than"
            f" {MAX_GRID_POINTS_PER_PARAMETER}; use a larger step or another algorithm"
        )
