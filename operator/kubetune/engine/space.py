"""The search space of a study as Optuna sees it, and how one trial's parameters are asked.

Parameters are asked in searchSpace order. A conditional parameter is asked only when the
parameter it names (listed earlier) holds one of its values; otherwise the trial does not have it.
`fixed` parameters are constants: they are added to a trial's params and never given to Optuna,
so the samplers search only the free subspace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.spec.bounds import MAX_GRID_POINTS_PER_PARAMETER, ParameterValue
from kubetune.spec.search_space import Parameter, ParameterType
from kubetune.spec.values import as_decimal, grid_points
from kubetune.spec.values import same_value as same_value  # the engine's name for it


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


def condition_holds(parameter: Parameter, params: Mapping[str, ParameterValue]) -> bool:
    """Whether a parameter is active given the parameters asked before it."""
    condition = parameter.condition
    if condition is None:
        return True
    return _holds(condition.parameter, condition.values, params)


def _holds(
    parameter: str, values: Sequence[ParameterValue], params: Mapping[str, ParameterValue]
) -> bool:
    if parameter not in params:
        return False
    value = params[parameter]
    return any(same_value(value, v) for v in values)


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


class SearchSpace:
    """A study's searchSpace worked out once: distributions built, conditions and bounds read.

    The spec of a running study is immutable, so the engine builds this once and every ask reuses
    it; building Optuna distributions and reading the pydantic models again per ask and per
    parameter was a measurable part of a cheap sampler's ask.
    """

    def __init__(self, parameters: Sequence[Parameter]) -> None:
        self.parameters = tuple(parameters)
        self.by_name = {p.name: p for p in self.parameters}
        self.distributions = distributions(self.parameters)
        # (name, fixed value or None, distribution or None, int parameter, condition or None)
        self._steps: list[_Step] = []
        for p in self.parameters:
            condition = (
                None if p.condition is None else (p.condition.parameter, tuple(p.condition.values))
            )
            self._steps.append(
                _Step(
                    p.name,
                    p.value,
                    self.distributions.get(p.name),
                    p.type is ParameterType.INT,
                    condition,
                )
            )

    def suggest(self, trial: optuna.Trial) -> dict[str, ParameterValue]:
        """Ask a trial's parameters in searchSpace order, honouring conditions and fixed values.

        `Trial._suggest` with the prebuilt distribution is what `suggest_float`, `suggest_int`
        and `suggest_categorical` do after building the same distribution afresh (Study.ask
        with fixed_distributions calls it too); suggest_int's int() is kept.
        """
        params: dict[str, ParameterValue] = {}
        for name, fixed, dist, is_int, condition in self._steps:
            if condition is not None and not _holds(*condition, params):
                continue
            if dist is None:
                assert fixed is not None
                params[name] = fixed
            elif is_int:
                params[name] = int(trial._suggest(name, dist))
            else:
                params[name] = trial._suggest(name, dist)
        return params

    def searched(
        self, params: Mapping[str, ParameterValue]
    ) -> tuple[dict[str, ParameterValue], dict[str, BaseDistribution]]:
        """The part of `params` Optuna knows (fixed parameters removed), with its distributions."""
        kept: dict[str, ParameterValue] = {}
        dists: dict[str, BaseDistribution] = {}
        for name, dist in self.distributions.items():
            if name in params:
                kept[name] = params[name]
                dists[name] = dist
        return kept, dists

    def coerce_params(self, params: Mapping[str, object], where: str) -> dict[str, ParameterValue]:
        """Stored params in searchSpace order and types; `where` names them in errors."""
        unknown = sorted(set(params) - self.by_name.keys())
        if unknown:
            raise ValueError(f"{where}: {unknown} are not in spec.searchSpace; remove them")
        out: dict[str, ParameterValue] = {}
        for parameter in self.parameters:
            if parameter.name in params:
                try:
                    out[parameter.name] = coerce(parameter, params[parameter.name])
                except ValueError as error:
                    raise ValueError(f"{where}.{parameter.name}: {error}") from None
        return out

    def imported_params(self, params: Mapping[str, object]) -> dict[str, ParameterValue]:
        """Another study's trial params as this space's: the parameters searched here that it
        set and that a trial here would be asked given them (their conditions hold), in this
        space's types. Parameters fixed here are left out, whatever their value there: the
        fixed value is what this study runs (a larger dataset, say). Raises ValueError for a
        value its parameter here cannot take; Optuna's create_trial checks the range."""
        out: dict[str, ParameterValue] = {}
        seen: dict[str, ParameterValue] = {}
        for parameter in self.parameters:
            if not condition_holds(parameter, seen):
                continue
            if parameter.type is ParameterType.FIXED:
                assert parameter.value is not None
                seen[parameter.name] = parameter.value
            elif parameter.name in params:
                out[parameter.name] = seen[parameter.name] = coerce(
                    parameter, params[parameter.name]
                )
        return out


class _Step(NamedTuple):
    name: str
    fixed: ParameterValue | None
    distribution: BaseDistribution | None
    is_int: bool
    condition: tuple[str, tuple[ParameterValue, ...]] | None


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
        step = as_decimal(parameter.step)
        count = grid_points(parameter) or 0
        _check_grid_axis(where, parameter.name, count)
        # Decimal keeps grid points exact: 0.1 + 2 * 0.1 is 0.3, not 0.30000000000000004.
        return [float(as_decimal(low) + i * step) for i in range(count)]
    step_int = 1 if parameter.step is None else int(parameter.step)
    count = grid_points(parameter) or 0
    _check_grid_axis(where, parameter.name, count)
    return list(range(int(low), int(high) + 1, step_int))


def _check_grid_axis(where: str, name: str, count: int) -> None:
    if count > MAX_GRID_POINTS_PER_PARAMETER:
        raise ValueError(
            f"{where}: parameter {name!r} has {count} grid points, more than"
            f" {MAX_GRID_POINTS_PER_PARAMETER}; use a larger step or another algorithm"
        )
