"""What a study optimizes (spec.objective): its metrics, their directions and goals, and how
a trial's reports become its value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_ADDITIONAL_METRICS, MAX_OBJECTIVES, Bound, MetricName


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Aggregation(StrEnum):
    """How the values a trial reports become its final value."""

    LAST = "last"
    MIN = "min"
    MAX = "max"


class ObjectiveMetric(ApiModel):
    name: MetricName
    """Name of the metric the trainer reports, for example val_loss."""
    direction: Direction = Direction.MINIMIZE
    """Whether smaller (minimize) or larger (maximize) values are better."""
    goal: Bound | None = None
    """The study completes with reason GoalReached once a trial reaches this value (with
    several objectives: once one trial reaches every goal that is set)."""


class Objective(ApiModel):
    metrics: Annotated[list[ObjectiveMetric], Field(min_length=1, max_length=MAX_OBJECTIVES)]
    """The metrics to optimize. One metric is single-objective; several make a multi-objective
    study whose result is a Pareto front."""
    aggregation: Aggregation = Aggregation.LAST
    """How a trial's reports become its final value: the last value reported (last), or the
    best-in-direction minimum (min) or maximum (max) over all its reports."""
    additional_metrics: Annotated[list[MetricName], Field(max_length=MAX_ADDITIONAL_METRICS)] = []
    """Further metrics to record with each trial (not optimized)."""

    @property
    def is_multi_objective(self) -> bool:
        return len(self.metrics) > 1
