"""Parameter values compared and counted once, for the validation and the engine alike.

Both need the same answers (is 1 a value of this parameter, how many points has this grid
axis), so the rules live here, below both. Every function runs in time linear in its input and
never raises on a value the schema admits: a quantity too large to compute is reported as such.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Final

from kubetune.spec.bounds import ParameterValue
from kubetune.spec.search_space import Parameter, ParameterType

# Enough digits for any quotient of two float64 values the schema admits (|x| <= 1e15, with a
# step of at least 1e-300 that is 10^315 at most), so `%` and `//` never give DivisionImpossible.
_EXACT: Final = decimal.Context(prec=400, Emax=1000, Emin=-1000)


def same_value(a: object, b: object) -> bool:
    """Equality of parameter values that keeps booleans apart from numbers (True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def value_key(value: ParameterValue) -> tuple[str, ParameterValue]:
    """A hashable key under which same_value's equal values, and only those, coincide."""
    return ("bool" if isinstance(value, bool) else "other", value)


def value_keys(values: Iterable[ParameterValue]) -> frozenset[tuple[str, ParameterValue]]:
    return frozenset(value_key(v) for v in values)


def as_decimal(number: float) -> Decimal:
    """The decimal the user wrote (0.1, not 0.1000000000000000055...), as Optuna compares."""
    return Decimal(str(number))


def steps_between(low: float, high: float, step: float) -> tuple[int, Decimal]:
    """How many whole steps fit in [low, high], and what is left over (0 when step divides)."""
    span = _EXACT.subtract(as_decimal(high), as_decimal(low))
    whole, rest = _EXACT.divmod(span, as_decimal(step))
    return int(whole), rest


def grid_step(p: Parameter) -> float | None:
    """The step of a float or int parameter on a grid (int defaults to 1), or None."""
    if p.type is ParameterType.INT:
        return 1.0 if p.step is None else p.step
    return p.step if p.type is ParameterType.FLOAT else None


def grid_points(p: Parameter) -> int | None:
    """Values of a parameter on a grid without listing them; None when it has no finite set."""
    if p.type is ParameterType.FIXED:
        return 1
    if p.type is ParameterType.CATEGORICAL:
        return None if p.choices is None else len(p.choices)
    step = grid_step(p)
    if step is None or p.low is None or p.high is None or p.low > p.high:
        return None
    return steps_between(p.low, p.high, step)[0] + 1


def format_params(params: Mapping[str, ParameterValue]) -> str:
    """Parameters for people: floats to 4 significant digits, in searchSpace order."""
    return ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in params.items()
    )
