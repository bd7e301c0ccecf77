"""The hyperparameters a study searches (spec.searchSpace): their types, ranges, choices and
conditions. Rules a schema cannot express live in kubetune.spec.search_space_rules.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_BOUND, MAX_CHOICES, Bound, ParameterName, ParameterValue


class ParameterType(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"
    FIXED = "fixed"


class ParameterCondition(ApiModel):
    parameter: ParameterName
    """A parameter listed earlier in searchSpace."""
    values: Annotated[list[ParameterValue], Field(min_length=1, max_length=MAX_CHOICES)]
    """The values of that parameter for which this parameter is sampled."""


class Parameter(ApiModel):
    name: ParameterName
    """Name of the hyperparameter. The trainer receives it as KUBETUNE_PARAM_<NAME> (upper case),
    in KUBETUNE_PARAMS and as ${params.<name>} in command and args."""
    type: ParameterType
    """float, int, categorical, or fixed (a constant, to search a subspace)."""
    low: Bound | None = None
    """Lower bound, inclusive (float and int)."""
    high: Bound | None = None
    """Upper bound, inclusive (float and int)."""
    log: bool = False
    """Sample on a log scale (float and int; needs low > 0; cannot be combined with step)."""
    step: Annotated[float, Field(gt=0, le=2 * MAX_BOUND)] | None = None
    """Discretization step; it must divide high - low (float and int; int defaults to 1)."""
    choices: Annotated[list[ParameterValue], Field(min_length=1, max_length=MAX_CHOICES)] | None = (
        None
    )
    """The values to choose from (categorical): strings, numbers or booleans."""
    value: ParameterValue | None = None
    """The constant value (fixed)."""
    condition: ParameterCondition | None = None
    """Sample this parameter only when another parameter has one of the given values (for
    example momentum only when optimizer is sgd). Otherwise the trial does not receive it."""
