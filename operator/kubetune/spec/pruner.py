"""Early stopping of hopeless trials (spec.pruner): the Optuna pruner, its settings, and which
settings apply to which pruner.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_BOUND, MAX_COUNT, Bound, Count, PositiveCount


class PrunerName(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    PERCENTILE = "percentile"
    SUCCESSIVE_HALVING = "successiveHalving"
    HYPERBAND = "hyperband"
    THRESHOLD = "threshold"
    PATIENT = "patient"


class Pruner(ApiModel):
    name: PrunerName = PrunerName.NONE
    """Early stopping of hopeless trials from their intermediate reports: none (default),
    median, percentile, successiveHalving (ASHA), hyperband, threshold, or patient."""
    startup_trials: Count | None = None
    """Trials that complete before pruning starts (median, percentile; default 5)."""
    warmup_steps: Count | None = None
    """Steps of each trial that are never pruned (median, percentile, threshold; default 0)."""
    interval_steps: PositiveCount | None = None
    """Check every this many steps (median, percentile, threshold; default 1)."""
    min_trials: PositiveCount | None = None
    """Trials that must have reported a step before it is compared (median, percentile)."""
    percentile: Annotated[float, Field(ge=0, le=100)] | None = None
    """Prune below this percentile of other trials (percentile; required there)."""
    min_resource: PositiveCount | None = None
    """Steps before the first rung (successiveHalving, hyperband; default derived by Optuna)."""
    max_resource: PositiveCount | None = None
    """Steps of a full trial (hyperband; default derived by Optuna)."""
    reduction_factor: Annotated[int, Field(ge=2, le=MAX_COUNT)] | None = None
    """Keep one in this many trials at each rung (successiveHalving, default 4; hyperband,
    default 3)."""
    min_early_stopping_rate: Count | None = None
    """Rung offset s of ASHA (successiveHalving; default 0)."""
    bootstrap_count: Count | None = None
    """Trials that must reach a rung before promotion decisions (successiveHalving, hyperband)."""
    lower: Bound | None = None
    """Prune a trial that reports a value below this (threshold)."""
    upper: Bound | None = None
    """Prune a trial that reports a value above this (threshold)."""
    patience: Count | None = None
    """Prune once this many reported steps in a row brought no improvement of at least
    minDelta over the trial's best value (required for patient; on another pruner, that pruner
    then decides)."""
    min_delta: Annotated[float, Field(ge=0, le=MAX_BOUND)] | None = None
    """Smallest improvement over the trial's best value that counts, for patience (default 0:
    any strict improvement)."""


PRUNER_SETTINGS: dict[PrunerName, frozenset[str]] = {
    PrunerName.NONE: frozenset(),
    PrunerName.MEDIAN: frozenset(
        {"startup_trials", "warmup_steps", "interval_steps", "min_trials"}
    ),
    PrunerName.PERCENTILE: frozenset(
        {"startup_trials", "warmup_steps", "interval_steps", "min_trials", "percentile"}
    ),
    PrunerName.SUCCESSIVE_HALVING: frozenset(
        {"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"}
    ),
    PrunerName.HYPERBAND: frozenset(
        {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"}
    ),
    PrunerName.THRESHOLD: frozenset({"lower", "upper", "warmup_steps", "interval_steps"}),
    PrunerName.PATIENT: frozenset(),
}
PATIENCE_SETTINGS = frozenset({"patience", "min_delta"})
