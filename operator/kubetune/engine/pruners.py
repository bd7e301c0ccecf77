"""Which Optuna pruner a study's pruner spec becomes.

Unset settings keep Optuna's defaults. `patience` on any pruner wraps it in `EarlyStoppingPruner`,
so a trial is pruned only when the wrapped pruner says so after `patience` steps without
improvement; the `patient` pruner is that wrapper around no pruner. What counts as an improvement
is Keras's and Lightning's EarlyStopping rule (see `EarlyStoppingPruner`), not Optuna's
PatientPruner's, which never prunes a flat curve when minDelta > 0.

Successive halving and Hyperband estimate an unset minResource / maxResource from the completed
trials the first time they need it, and Optuna keeps that estimate in memory for the life of the
process. A restarted operator would estimate again from different trials, so the engine pins the
first estimate in the study's system attributes (`RESOLVED_PREFIX`), which are persisted with the
trial that caused it and replayed on rebuild; `create_pruner` then passes it explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    ThresholdPruner,
)
from optuna.study import StudyDirection

from kubetune.spec.pruner import Pruner, PrunerName

_T = TypeVar("_T")

RESOLVED_PREFIX = "kubetune:pruner:"
"""Study system attribute prefix of resources the pruner estimated (min_resource, max_resource)."""


def create_pruner(pruner: Pruner, resolved: Mapping[str, Any] | None = None) -> BasePruner:
    """The Optuna pruner for a spec; `resolved` holds pinned estimates (see module docstring)."""
    resolved = resolved or {}
    name = pruner.name
    inner: BasePruner | None
    if name in (PrunerName.NONE, PrunerName.PATIENT):
        inner = None
    elif name is PrunerName.MEDIAN:
        inner = MedianPruner(**_common(pruner))
    elif name is PrunerName.PERCENTILE:
        if pruner.percentile is None:
            raise ValueError("spec.pruner.percentile: the percentile pruner needs a percentile")
        inner = PercentilePruner(pruner.percentile, **_common(pruner))
    elif name is PrunerName.SUCCESSIVE_HALVING:
        inner = SuccessiveHalvingPruner(
            min_resource=_resource(pruner.min_resource, resolved.get("min_resource")),
            reduction_factor=_or(pruner.reduction_factor, 4),
            min_early_stopping_rate=_or(pruner.min_early_stopping_rate, 0),
            bootstrap_count=_or(pruner.bootstrap_count, 0),
        )
    elif name is PrunerName.HYPERBAND:
        inner = HyperbandPruner(
            min_resource=_or(pruner.min_resource, 1),
            max_resource=_resource(pruner.max_resource, resolved.get("max_resource")),
            reduction_factor=_or(pruner.reduction_factor, 3),
            bootstrap_count=_or(pruner.bootstrap_count, 0),
        )
    elif name is PrunerName.THRESHOLD:
        if pruner.lower is None and pruner.upper is None:
            raise ValueError("spec.pruner: the threshold pruner needs lower, upper or both")
        inner = ThresholdPruner(
            lower=pruner.lower,
            upper=pruner.upper,
            n_warmup_steps=_or(pruner.warmup_steps, 0),
            interval_steps=_or(pruner.interval_steps, 1),
        )
    else:
        raise ValueError(f"spec.pruner.name: unknown pruner {name!r}")

    patience = pruner.patience
    if name is PrunerName.PATIENT and patience is None:
        raise ValueError("spec.pruner.patience: the patient pruner needs patience")
    if patience is None:
        return inner if inner is not None else NopPruner()
    return EarlyStoppingPruner(inner, patience=patience, min_delta=_or(pruner.min_delta, 0.0))


class EarlyStoppingPruner(BasePruner):
    """Early stopping on a trial's own curve, as Keras's and Lightning's EarlyStopping do.

    The reference is the trial's first non-NaN reported value; a later value is an improvement
    when it is better than the reference (lower when minimizing, higher when maximizing) by at
    least `min_delta`, and by more than zero, and it then becomes the reference. Smaller gains do
    not move the reference, so they add up until they reach `min_delta`. A NaN value is never an
    improvement. Once the last `patience` reported steps (at least one) brought no improvement,
    the trial is pruned, or, with a wrapped pruner, pruned if that pruner says so; the wrapped
    pruner is asked only then, as in Optuna's PatientPruner, which this replaces. Steps count as
    reported (the keys of `intermediate_values`, in order), not by their numbers.
    """

    def __init__(
        self, wrapped_pruner: BasePruner | None, patience: int, min_delta: float = 0.0
    ) -> None:
        if patience < 0:
            raise ValueError(f"patience cannot be negative but got {patience}")
        if not min_delta >= 0:  # also refuses NaN
            raise ValueError(f"min_delta cannot be negative but got {min_delta}")
        self._wrapped_pruner = wrapped_pruner
        self._patience = patience
        self._min_delta = float(min_delta)

    @property
    def wrapped_pruner(self) -> BasePruner | None:
        return self._wrapped_pruner

    @property
    def patience(self) -> int:
        return self._patience

    @property
    def min_delta(self) -> float:
        return self._min_delta

    def steps_without_improvement(self, values: list[float], direction: StudyDirection) -> int:
        """How many of the last reported values brought no improvement (see the class)."""
        sign = -1.0 if direction is StudyDirection.MAXIMIZE else 1.0
        reference: float | None = None  # sign * the reference value: lower is better
        since = 0
        for value in values:
            signed = sign * float(value)
            if math.isnan(signed):
                since += 1
            elif reference is None or (
                reference - signed >= self._min_delta and reference - signed > 0.0
            ):
                reference, since = signed, 0
            else:
                since += 1
        return since

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None:
            return False
        intermediate = trial.intermediate_values
        values = [intermediate[step] for step in sorted(intermediate)]
        if self.steps_without_improvement(values, study.direction) < max(self._patience, 1):
            return False
        if self._wrapped_pruner is None:
            return True
        return self._wrapped_pruner.prune(study, trial)


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _resource(configured: int | None, resolved: Any) -> int | str:
    if configured is not None:
        return configured
    return int(resolved) if resolved is not None else "auto"


def _common(pruner: Pruner) -> dict[str, Any]:
    return {
        "n_startup_trials": _or(pruner.startup_trials, 5),
        "n_warmup_steps": _or(pruner.warmup_steps, 0),
        "interval_steps": _or(pruner.interval_steps, 1),
        "n_min_trials": _or(pruner.min_trials, 1),
    }


def _unwrap(pruner: BasePruner) -> BasePruner | None:
    if isinstance(pruner, EarlyStoppingPruner):
        return pruner.wrapped_pruner
    return pruner


def resolved_resources(pruner: BasePruner) -> dict[str, int]:
    """The resources successive halving or Hyperband has estimated so far (to be pinned)."""
    inner = _unwrap(pruner)
    if isinstance(inner, SuccessiveHalvingPruner) and inner._min_resource is not None:
        return {"min_resource": int(inner._min_resource)}
    if isinstance(inner, HyperbandPruner) and isinstance(inner._max_resource, int):
        return {"max_resource": inner._max_resource}
    return {}


def initialize(pruner: BasePruner, study: optuna.Study) -> None:
    """Set Hyperband's brackets up now when its maxResource is known.

    Hyperband assigns trials to brackets, and samplers see only a trial's bracket, but Optuna
    sets the brackets up lazily at the first prune call. Doing it at once makes a fresh engine and
    a rebuilt one agree from their first ask.
    """
    inner = _unwrap(pruner)
    if (
        isinstance(inner, HyperbandPruner)
        and isinstance(inner._max_resource, int)
        and not inner._pruners
    ):
        inner._try_initialization(study)
