"""The bounds every field of the TuningStudy and TuningTrial APIs is held to, and the
constrained types built on them (names, counts, bounds, parameter values): the CRD, the
validator and the engine read them here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Parameter and metric names: they become environment variable names and Optuna keys."""

ParameterName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63)]
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_:.\-/]*$", max_length=128)]
MAX_PARAMETERS = 100
"""Parameters in a search space: samplers slow down long before this (TPE and GP model every
parameter jointly), and each one becomes an environment variable of every trial pod."""
MAX_CHOICES = 1000
"""Values of one categorical parameter or one condition: a choice list longer than this is a
range written out, better searched as an int or float parameter."""
MAX_BOUND = 1e15
"""The largest |low|, |high|, goal or pruner threshold: Optuna's samplers compute in float64
(squares of ranges among them), and integers up to this are exact in a float64."""
MAX_INT64 = 2**63 - 1
"""Integers in a manifest fit Kubernetes' int64 (the API server's and CEL's integer)."""
MAX_COUNT = 2**31 - 1
"""Counts (trials, steps, retained pods): Kubernetes' int32, as its own counts (replicas)."""
MAX_VALUE_LENGTH = 1024
"""Characters in a string choice or fixed value: it becomes an environment variable and a
label-free part of every trial's status."""

ChoiceText = Annotated[StrictStr, Field(max_length=MAX_VALUE_LENGTH)]
ChoiceInt = Annotated[StrictInt, Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]
ChoiceFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
ParameterValue = StrictBool | ChoiceInt | ChoiceFloat | ChoiceText
"""A categorical choice or a fixed value: a string, a number or a boolean."""
Bound = Annotated[float, Field(ge=-MAX_BOUND, le=MAX_BOUND)]
"""A range bound or threshold, finite and small enough for float64 arithmetic."""
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PositiveCount = Annotated[int, Field(ge=1, le=MAX_COUNT)]

MAX_OBJECTIVES = 8
MAX_ADDITIONAL_METRICS = 32
MAX_GRID_POINTS_PER_PARAMETER = 100_000
"""A grid axis larger than this is a mistake (an int range without a step, say)."""
MAX_GRID_POINTS = 10_000_000
"""A grid larger than this (the product of its axes) could never be run to the end."""
MAX_PARETO_FRONT_IN_STATUS = 50
"""The most Pareto-optimal trials `status.paretoFront` lists (the first in its order; see
TuningStudyStatus.pareto_front); `status.paretoFrontSize` counts them all. An entry is a name,
a number and at most MAX_OBJECTIVES values, so 50 of them stay a few kilobytes, far under
etcd's object size limit."""
