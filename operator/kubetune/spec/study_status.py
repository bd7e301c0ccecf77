"""What the operator reports of a TuningStudy (status): its phase and conditions, its trials
by state, the best trial or the Pareto front, the budget used, and the re-evaluation with
its recommendation.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_OBJECTIVES, MAX_PARETO_FRONT_IN_STATUS, ParameterValue
from kubetune.spec.reevaluation import MAX_REEVALUATED_TRIALS, MAX_REPEATS


class StudyPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    REEVALUATING = "Reevaluating"
    COMPLETED = "Completed"
    FAILED = "Failed"
    INVALID = "Invalid"


class ConditionType(StrEnum):
    VALID = "Valid"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    METRICS_SOURCE = "MetricsSource"
    SEARCH_ENDED = "SearchEnded"
    WARM_START = "WarmStart"


class StudyConditionReason(StrEnum):
    """Why a study is in its phase; the reason of its Completed or Failed condition."""

    VALID = "SpecValid"
    INVALID = "SpecInvalid"
    TRIALS_RUNNING = "TrialsRunning"
    GOAL_REACHED = "GoalReached"
    MAX_TRIALS_REACHED = "MaxTrialsReached"
    MAX_DURATION_REACHED = "MaxDurationReached"
    GPU_HOURS_EXHAUSTED = "GpuHoursExhausted"
    MONEY_EXHAUSTED = "MoneyExhausted"
    PATIENCE_EXHAUSTED = "PatienceExhausted"
    SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
    TOO_MANY_FAILURES = "TooManyFailures"
    NO_TRIAL_SUCCEEDED = "NoTrialSucceeded"
    METRICS_SOURCE_READY = "MetricsSourceReady"
    METRICS_QUERY_INVALID = "MetricsQueryInvalid"
    METRICS_SOURCE_UNREACHABLE = "MetricsSourceUnreachable"
    REEVALUATING = "Reevaluating"
    WAITING_FOR_STUDIES = "WaitingForStudies"
    TRIALS_IMPORTED = "TrialsImported"


class Condition(ApiModel):
    type: str
    """Valid, Running, Completed, Failed, MetricsSource (whether the last Prometheus read
    worked), SearchEnded (the search is over and why; the re-evaluation runs), or WarmStart
    (the trials imported from spec.warmStart.fromStudies, or the studies waited for)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """A CamelCase word saying why, for example GoalReached or GpuHoursExhausted."""
    message: str = ""
    """A sentence for people."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = None
    """The spec generation the condition was computed from."""


class TrialCounts(ApiModel):
    total: int = 0
    """Trials created."""
    pending: int = 0
    """Trials whose pod has not started."""
    running: int = 0
    """Trials whose pod runs."""
    succeeded: int = 0
    """Trials completed with a value."""
    pruned: int = 0
    """Trials stopped early by the pruner."""
    failed: int = 0
    """Trials whose pod failed or that reported nothing in time."""
    metrics_unavailable: int = 0
    """Trials whose pod succeeded without reporting the objective."""
    timed_out: int = 0
    """Trials stopped by trialTimeout."""
    stopped: int = 0
    """Trials stopped because the study ended (budget, goal, ...)."""


class BestTrial(ApiModel):
    name: str
    """The TuningTrial object."""
    number: int
    """Its trial number."""
    params: dict[str, ParameterValue]
    """Its parameters."""
    value: float | None = None
    """Its objective value (single objective)."""
    values: list[float] | None = None
    """Its objective values (several objectives)."""


class ParetoTrial(ApiModel):
    name: str
    """The TuningTrial object."""
    number: int
    """Its trial number."""
    values: list[float]
    """Its objective values."""


class MetricSummary(ApiModel):
    metric: str
    """The metric re-evaluated."""
    values: Annotated[list[float], Field(max_length=MAX_REPEATS)] = []
    """Its value in each re-run that reported it, in the order of `seeds`."""
    mean: float | None = None
    """The mean of values."""
    std: float | None = None
    """Their sample standard deviation (0 with a single value)."""
    validation_value: float | None = None
    """The configuration's objective value in the search (the matching objective)."""


class ReevaluatedConfiguration(ApiModel):
    trial: int
    """The search trial whose configuration was re-run."""
    params: dict[str, ParameterValue]
    """Its parameters."""
    seeds: Annotated[list[int], Field(max_length=MAX_REPEATS)] = []
    """The seed of each re-run that reported, in the order of the values."""
    failed_runs: int = 0
    """Re-runs that ended without a value (failed, timed out, stopped)."""
    scores: Annotated[list[MetricSummary], Field(max_length=MAX_OBJECTIVES)] = []
    """The reevaluation metric (one objective), or every objective (several)."""


class Recommendation(ApiModel):
    trial: int
    """The search trial whose configuration wins on the re-evaluation's mean."""
    params: dict[str, ParameterValue]
    """Its parameters: the configuration to use."""
    metric: str
    """The metric it was chosen by."""
    values: Annotated[list[float], Field(max_length=MAX_REPEATS)]
    """The metric in each re-run, one per seed."""
    seeds: Annotated[list[int], Field(max_length=MAX_REPEATS)]
    """The seed of each re-run, in the order of values."""
    mean: float
    """The mean of values."""
    std: float
    """Their sample standard deviation (0 with a single value)."""
    validation_value: float | None = None
    """The configuration's objective value in the search."""
    generalization_gap: float | None = None
    """How much worse the re-evaluated mean is than the search's value, in the metric's
    direction (positive: the search's value was optimistic; validation overfitting or a lucky
    seed)."""


class ReevaluationStatus(ApiModel):
    runs: int = 0
    """Re-runs planned (configurations x repeats)."""
    finished: int = 0
    """Re-runs that have ended."""
    configurations: Annotated[
        list[ReevaluatedConfiguration], Field(max_length=MAX_REEVALUATED_TRIALS)
    ] = []
    """Each re-evaluated configuration, best first by its mean (several objectives: in the
    Pareto front's order)."""


class BudgetUsage(ApiModel):
    trials: int = 0
    """Trials started."""
    max_trials: int | None = None
    """The limit, when set."""
    gpu_hours: float = 0.0
    """GPU-hours used so far, running trials included."""
    max_gpu_hours: float | None = None
    """The limit, when set."""
    money: float = 0.0
    """Money spent so far, running trials included."""
    money_limit: float | None = None
    """The limit, when set."""
    currency: str | None = None
    """The currency of money and moneyLimit."""
    elapsed_seconds: float = 0.0
    """Wall clock since the study started."""
    max_duration_seconds: float | None = None
    """The limit, when set."""


class TuningStudyStatus(ApiModel):
    phase: StudyPhase = StudyPhase.PENDING
    """Pending, Running, Reevaluating (the search ended; the best configurations run again
    with new seeds), Completed, Failed or Invalid."""
    conditions: list[Condition] = []
    """Valid, Running, Completed and Failed, with reasons."""
    observed_generation: int | None = None
    """The spec generation this status reflects."""
    start_time: datetime | None = None
    """When the first trial was started."""
    completion_time: datetime | None = None
    """When the study completed or failed."""
    trials: TrialCounts = TrialCounts()
    """Trials by state."""
    progress: str = ""
    """Finished trials over maxTrials, for kubectl get (for example 12/50)."""
    best_trial: BestTrial | None = None
    """The best trial so far (single objective); with several objectives, the first trial of
    paretoFront (the best in the first objective)."""
    pareto_front: Annotated[list[ParetoTrial], Field(max_length=MAX_PARETO_FRONT_IN_STATUS)] = []
    """The Pareto-optimal trials (several objectives), best first in the first objective's
    direction, ties by trial number; the first 50 of them when the front is larger."""
    pareto_front_size: int = 0
    """Trials on the Pareto front, all of them (0 with a single objective)."""
    budget: BudgetUsage = BudgetUsage()
    """What the study has used of its budget."""
    importances: dict[str, float] | None = None
    """Parameter importances (PED-ANOVA), once enough trials completed."""
    importances_trials: int | None = None
    """Completed trials the importances were computed from."""
    reevaluation: ReevaluationStatus | None = None
    """The re-runs of the best configurations (spec.reevaluation), once the search ended."""
    recommendation: Recommendation | None = None
    """The configuration to use: the best on average over the re-runs (single objective)."""
    message: str = ""
    """The latest thing a person should know, for example why the study is Invalid."""
    spec_fingerprints: dict[str, str] = {}
    """A hash of each immutable spec field as the study started, to refuse later changes."""
    kopf: dict[str, Any] = {}
    """kopf's bookkeeping (progress of handlers); not for users."""
