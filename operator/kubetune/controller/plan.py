"""A reconcile's result, the Plan the operator applies (trial updates, pods to stop or delete,
trials and pods to create, the study's status, events), and the plan while it is being built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kubetune.budget import TrialCost
from kubetune.controller.metrics_source import SourceReads
from kubetune.controller.observation import SourceErrorKind, SourceReading
from kubetune.spec.study_status import BudgetUsage, TuningStudyStatus
from kubetune.spec.trial import TuningTrial, TuningTrialStatus, is_search_trial

WorkloadKind = Literal["Pod", "Job"]
"""What runs each trial of a study: one pod, or a batch/v1 Job (spec.trialTemplate.job)."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to emit about the study (or one of its trials)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    trial: str | None = None


@dataclass(frozen=True)
class TrialUpdate:
    """A new status for an existing TuningTrial."""

    name: str
    status: TuningTrialStatus


@dataclass(frozen=True)
class Plan:
    """What the operator is to do, in this order: update trial statuses, stop workloads, delete
    workloads, create trials, create workloads, write the study status, emit events.

    A trial's workload is what runs it: its pod, or its batch/v1 Job (with the headless Service
    of a distributed run), named as the trial; `workload_kind` says which for the whole study."""

    study_status: TuningStudyStatus
    workload_kind: WorkloadKind = "Pod"
    trial_updates: tuple[TrialUpdate, ...] = ()
    stop_workloads: tuple[str, ...] = ()
    """Running workloads to stop where they are: their pods' activeDeadlineSeconds is lowered
    to STOP_DEADLINE_SECONDS, so that the kubelet ends them (SIGTERM, the grace period,
    SIGKILL) and the pod objects and their logs stay (a Job is first deleted with its pods
    orphaned, and they are given to the trial: the job controller would delete them)."""
    delete_workloads: tuple[str, ...] = ()
    """Workloads to delete with their pods: pending ones being stopped, stopped ones that
    outlived their grace period, and ended ones past the study's podRetention."""
    create_trials: tuple[TuningTrial, ...] = ()
    new_trial_workloads: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    """The objects of each trial in create_trials, by trial name (its pod; or its Job and its
    Service), to create right after it with the trial's uid filled in (`with_owner_uid`);
    skipped when the trial already existed."""
    create_workloads: tuple[dict[str, Any], ...] = ()
    """Objects of existing trials that have none yet (the operator died between the creates)."""
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the controller must look again even if nothing changes (a timeout)."""
    source_reads: SourceReads | None = None
    """Reads of the study's metrics source (Prometheus) due now, done last: their readings
    are the input (`readings`) of the next reconcile, which requeue_after (0) asks for at
    once."""
    ask_seconds: tuple[float, ...] = field(default=(), compare=False)
    """How long each of Optuna's asks took (for the operator's metrics; not a decision)."""
    measured_usage: BudgetUsage | None = None
    """The budget usage as measured now, for the operator's metrics: study_status.budget may
    be an older measurement (`status.shown_usage`)."""


@dataclass
class Work:
    """The plan under construction, and the trial records as they will be after it."""

    trials: dict[int, TuningTrial]
    """The search trials, by number."""
    cost: TrialCost
    reruns: dict[str, TuningTrial] = field(default_factory=dict)
    """The re-evaluation runs, by name."""
    pod_names: frozenset[str] = frozenset()
    """The trials whose workloads (pods, Jobs) exist."""
    readings: Mapping[str, SourceReading] = field(default_factory=dict)
    """The metrics source's readings, by trial name, of the reads the previous plan asked for."""
    updates: dict[str, TuningTrialStatus] = field(default_factory=dict)
    stop_workloads: list[str] = field(default_factory=list)
    delete_workloads: list[str] = field(default_factory=list)
    create_trials: list[TuningTrial] = field(default_factory=list)
    create_workloads: list[dict[str, Any]] = field(default_factory=list)
    new_trial_workloads: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    source_error: tuple[SourceErrorKind, str] | None = None
    """The latest failed read of the metrics source in this reconcile."""
    source_read: bool = False
    """A read of the metrics source worked in this reconcile."""
    next_read: datetime | None = None
    """When the next read of the metrics source falls due."""
    source_reads: SourceReads | None = None
    """The reads of the metrics source due now."""
    ask_seconds: list[float] = field(default_factory=list)
    wake_at: list[datetime] = field(default_factory=list)
    """Times to look again at even if nothing changes (a stopped pod's escalation)."""

    def update(self, trial: TuningTrial, status: TuningTrialStatus) -> TuningTrial:
        updated = trial.model_copy(update={"status": status})
        self.add(updated)
        self.updates[trial.metadata.name or ""] = status
        return updated

    def add(self, trial: TuningTrial) -> None:
        if is_search_trial(trial):
            self.trials[trial.spec.number] = trial
        else:
            self.reruns[trial.metadata.name or ""] = trial

    def current(self, trial: TuningTrial) -> TuningTrial:
        """The trial as this plan has left it so far."""
        if is_search_trial(trial):
            return self.trials[trial.spec.number]
        return self.reruns[trial.metadata.name or ""]

    def all(self) -> list[TuningTrial]:
        """Every trial: the search's, then the re-evaluation runs."""
        return [*self.trials.values(), *self.reruns.values()]
