"""The TuningTrial API: one training run of a study, and the record the study is rebuilt from.

A TuningTrial is owned by its TuningStudy and owns its pod. Its status holds everything Optuna
needs to rebuild the study exactly after an operator restart (params, state, values,
intermediate values, the sampler's and pruner's system attributes), so no database is needed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from kubetune.spec import api
from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import (
    MAX_ADDITIONAL_METRICS,
    MAX_COUNT,
    MAX_OBJECTIVES,
    MAX_PARAMETERS,
    ParameterName,
    ParameterValue,
)
from kubetune.spec.study import ObjectMeta

MAX_METRICS = MAX_OBJECTIVES + MAX_ADDITIONAL_METRICS
"""Metrics a trial records: the study's objectives and additional metrics."""
MAX_REASON_LENGTH = 128
"""A reason is one CamelCase word the operator chooses."""
MAX_MESSAGE_LENGTH = 32768
"""As Kubernetes' own condition messages (metav1.Condition); the operator's are far shorter."""
MAX_INTERMEDIATE_VALUES = 200
"""Intermediate values kept per trial; past this they are thinned (see thin_intermediate_values),
so that a trial that reports every step for days stays far below the etcd object limit."""


class TrialState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PRUNED = "Pruned"
    FAILED = "Failed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    TIMED_OUT = "TimedOut"
    STOPPED = "Stopped"

    @property
    def is_active(self) -> bool:
        """The trial is pending or running. (A stopped trial's pod may still hold its GPUs for
        its grace period: see TuningTrialStatus.holds_pod.)"""
        return self in (TrialState.PENDING, TrialState.RUNNING)

    @property
    def is_failure(self) -> bool:
        """The trial counts toward maxFailedTrials."""
        return self in (TrialState.FAILED, TrialState.TIMED_OUT, TrialState.METRICS_UNAVAILABLE)


class IntermediateValue(ApiModel):
    step: Annotated[int, Field(ge=0)]
    """The step (epoch, iteration) the value was reported at."""
    value: float
    """The objective value at that step."""


MAX_SEED = 2**31 - 1
"""Seeds fit a signed 32-bit integer, which every framework's seeding accepts."""


class ReevaluationRun(ApiModel):
    trial: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    """The search trial whose configuration this run repeats."""
    repeat: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    """Which repeat it is, from 0."""


class TuningTrialSpec(ApiModel):
    study: Annotated[str, Field(min_length=1, max_length=api.MAX_STUDY_NAME_LENGTH)]
    """The TuningStudy this trial belongs to."""
    number: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    """The trial number within its study, from 0."""
    params: Annotated[dict[ParameterName, ParameterValue], Field(max_length=MAX_PARAMETERS)]
    """The hyperparameters of this trial."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    """The seed the trainer receives (KUBETUNE_SEED, ${trial.seed}): stable per search trial,
    new for each re-evaluation run."""
    reevaluation: ReevaluationRun | None = None
    """Set on a re-evaluation run: a configuration of the search run again with a new seed,
    kept out of the search's history. Its number is the search trial's."""


class TuningTrialStatus(ApiModel):
    state: TrialState = TrialState.PENDING
    """Pending, Running, Succeeded, Pruned, Failed, MetricsUnavailable, TimedOut or Stopped."""
    reason: Annotated[str, Field(max_length=MAX_REASON_LENGTH)] | None = None
    """A CamelCase word saying why the trial is in its state, for example PrunedAtStep."""
    message: Annotated[str, Field(max_length=MAX_MESSAGE_LENGTH)] | None = None
    """Details for people."""
    pod_name: Annotated[str, Field(max_length=253)] | None = None
    """The pod that runs the trial, or its Job (spec.trialTemplate.job), named as the trial."""
    start_time: datetime | None = None
    """When the pod started running."""
    completion_time: datetime | None = None
    """When the trial finished (or was stopped)."""
    pod_terminating: bool = False
    """The trial was stopped and its pod has not terminated yet (a trainer within its grace
    period): its GPUs stay counted, and its parallelism slot taken, until it has."""
    pod_end_time: datetime | None = None
    """When the trial's pod terminated (its last container ended, or the pod was gone): the end
    of its GPU time."""
    last_report_time: datetime | None = None
    """When the trainer last reported a value."""
    intermediate_values: Annotated[
        list[IntermediateValue], Field(max_length=MAX_INTERMEDIATE_VALUES)
    ] = []
    """Objective values reported while training (single-objective studies), thinned past 200."""
    reported_steps: int = 0
    """Intermediate reports received, including those thinned away."""
    values: Annotated[list[float], Field(max_length=MAX_OBJECTIVES)] | None = None
    """The final objective values, one per objective metric."""
    metrics: Annotated[dict[str, float], Field(max_length=MAX_METRICS)] = {}
    """The final value of every metric the trial reported that the study records."""
    gpus: int = 0
    """GPUs the trial's pod requests (what GPU-hour and money budgets count)."""
    gpu_seconds: float = 0.0
    """GPU time used: gpus times running time."""
    cost: float = 0.0
    """Money spent on this trial."""
    system_attrs: dict[str, Any] = {}
    """Optuna's sampler and pruner state for this trial, kept to rebuild the study exactly."""

    @property
    def holds_pod(self) -> bool:
        """Its pod may still run and hold its GPUs: the trial is active, or it was stopped and
        its pod is terminating."""
        return self.state.is_active or self.pod_terminating


class TuningTrial(ApiModel):
    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["TuningTrial"] = "TuningTrial"
    metadata: ObjectMeta = ObjectMeta()
    spec: TuningTrialSpec
    status: TuningTrialStatus = TuningTrialStatus()


def trial_name(study_name: str, number: int) -> str:
    """The deterministic name of a study's trial: creating it twice is a 409, never a duplicate.

    Kubernetes names are at most 253 characters, and pod names end up as label values (63), so
    long study names are shortened with a stable hash.
    """
    return _suffixed(study_name, f"-{number}")


def reevaluation_trial_name(study_name: str, number: int, repeat: int) -> str:
    """The name of a re-run of trial `number`'s configuration: `<trial name>-r<repeat>`,
    deterministic like trial_name and within the same 63 characters."""
    return _suffixed(study_name, f"-{number}-r{repeat}")


def _suffixed(study_name: str, suffix: str) -> str:
    limit = 63 - len(suffix)
    if len(study_name) <= limit:
        return f"{study_name}{suffix}"
    digest = hashlib.sha256(study_name.encode()).hexdigest()[:8]
    return f"{study_name[: limit - 9].rstrip('-')}-{digest}{suffix}"


def is_search_trial(trial: TuningTrial) -> bool:
    """A trial of the search (asked of Optuna), not a re-evaluation run."""
    return trial.spec.reevaluation is None


def thin_intermediate_values(
    values: list[IntermediateValue], limit: int = MAX_INTERMEDIATE_VALUES
) -> list[IntermediateValue]:
    """Keep at most `limit` values: the latest half exactly, every other one of the older half.

    Pruners look mostly at recent steps and at rungs, so the recent history stays exact while the
    old one is downsampled; repeated thinning keeps the list bounded however long a trial runs.
    """
    if len(values) <= limit:
        return values
    keep_recent = limit // 2
    older, recent = values[:-keep_recent], values[-keep_recent:]
    while len(older) + len(recent) > limit:
        older = older[::2]
    return older + recent
