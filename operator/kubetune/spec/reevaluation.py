"""The re-runs of a study's best configurations once its search ends (spec.reevaluation): how
many, how often, and the metric that ranks them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MetricName
from kubetune.spec.objective import Direction

MAX_REEVALUATED_TRIALS = 20
"""Configurations re-evaluated at most: the status lists each, with one value per repeat."""
MAX_REPEATS = 20
"""Re-runs per configuration at most (with MAX_REEVALUATED_TRIALS: 400 runs)."""


class Reevaluation(ApiModel):
    top_trials: Annotated[int, Field(ge=1, le=MAX_REEVALUATED_TRIALS)] = 3
    """How many of the best search trials have their configuration re-run (with several
    objectives: members of the Pareto front, at most this many)."""
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 3
    """Runs of each configuration, each with a new seed (KUBETUNE_SEED)."""
    metric: MetricName | None = None
    """The metric that ranks the re-run configurations, by its mean over the repeats: a
    held-out metric the trainer reports (test_accuracy, say), listed in the objective's
    metrics or additionalMetrics. By default the (single) objective. Multi-objective studies
    leave it unset: every objective is re-evaluated."""
    direction: Direction | None = None
    """Whether a smaller or larger `metric` is better; by default the objective's
    direction."""
