"""The operator's own Prometheus metrics: its studies, their trials and budgets, and its health.

A study's state (phase, trials by state, best value, budget, parallelism, oldest Pending trial,
the re-evaluation's progress and recommendation) is kept as one snapshot per study and turned
into gauges at scrape time by a collector: a study that goes away takes all its series with it,
and a Pending trial's age is current at each scrape even when nothing wakes the study. Events (a
trial finishing, an ask, a reconcile) are counters and histograms updated as they happen. Labels
are bounded: namespace, study and state-like values (and the one re-evaluation metric of a
study, and the names of its search space's parameters) only, never a trial, pod or parameter
value. Everything is in base units (seconds,
GPU-seconds).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import kubetune
from kubetune.controller import Plan
from kubetune.spec.study_status import StudyPhase, TuningStudyStatus
from kubetune.spec.trial import TrialState, TuningTrial

PREFIX = "kubetune"

FINISHED_STATES = tuple(state for state in TrialState if not state.is_active)
"""The outcomes a trial can finish with: the values of the `outcome` label."""

HANDLERS = ("reconcile", "delete")
"""The handlers whose duration and errors are measured: the values of the `handler` label."""

BUDGETS = ("trials", "gpu_seconds", "money", "elapsed_seconds")
"""The values of the `budget` label."""

TRIAL_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
"""Seconds: a synthetic trial takes a second, a real training run minutes to a day."""
ASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds: TPE asks in milliseconds, GP and CMA-ES on a large study in seconds."""
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_STUDY_LABELS = ("namespace", "study")


@dataclass(frozen=True)
class StudySnapshot:
    """What the gauges of one study show, as of its latest reconcile."""

    status: TuningStudyStatus
    parallelism: int = 1
    oldest_pending: datetime | None = None
    """When the oldest trial still Pending was created; None when no trial is Pending."""


def budget_usage(status: TuningStudyStatus) -> dict[str, tuple[float, float | None]]:
    """Used and limit (None: no limit) of each budget, in base units (GPU-seconds, seconds)."""
    usage = status.budget
    gpu_limit = usage.max_gpu_hours
    return {
        "trials": (usage.trials, usage.max_trials),
        "gpu_seconds": (usage.gpu_hours * 3600, None if gpu_limit is None else gpu_limit * 3600),
        "money": (usage.money, usage.money_limit),
        "elapsed_seconds": (usage.elapsed_seconds, usage.max_duration_seconds),
    }


def oldest_pending(trials: Sequence[TuningTrial], plan: Plan, now: datetime) -> datetime | None:
    """When the oldest trial that is Pending once the plan is applied was created (a trial the
    plan creates counts as created `now`)."""
    states = {t.metadata.name: t.status.state for t in trials}
    states.update({update.name: update.status.state for update in plan.trial_updates})
    created = [
        t.metadata.creation_timestamp or now
        for t in trials
        if states.get(t.metadata.name) is TrialState.PENDING
    ]
    created += [now for _ in plan.create_trials]
    return min(created, default=None)


def parallelism_of(document: Mapping[str, Any]) -> int:
    """spec.budget.parallelism of a study manifest as read from the API (1 when unset)."""
    budget = (document.get("spec") or {}).get("budget") or {}
    value = budget.get("parallelism", 1)
    return value if isinstance(value, int) else 1


class _StudyCollector(Collector):
    """Builds the study gauges from the snapshots at scrape time."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshots = self._metrics.snapshots()
        now = self._metrics.clock()
        phase = GaugeMetricFamily(
            f"{PREFIX}_study_phase",
            "1 for the phase a study is in, 0 for the others.",
            labels=[*_STUDY_LABELS, "phase"],
        )
        trials = GaugeMetricFamily(
            f"{PREFIX}_trials",
            "Trials of a study by state (status.trials).",
            labels=[*_STUDY_LABELS, "state"],
        )
        best = GaugeMetricFamily(
            f"{PREFIX}_best_objective_value",
            "The best trial's objective value; one series per objective (index from 0).",
            labels=[*_STUDY_LABELS, "objective"],
        )
        used = GaugeMetricFamily(
            f"{PREFIX}_budget_used",
            "What a study has used of each budget (trials, gpu_seconds, money, elapsed_seconds).",
            labels=[*_STUDY_LABELS, "budget"],
        )
        limit = GaugeMetricFamily(
            f"{PREFIX}_budget_limit",
            "A study's limit of each budget it sets (absent when unlimited).",
            labels=[*_STUDY_LABELS, "budget"],
        )
        parallelism = GaugeMetricFamily(
            f"{PREFIX}_study_parallelism",
            "Trials a study may run at the same time (spec.budget.parallelism).",
            labels=list(_STUDY_LABELS),
        )
        pending_age = GaugeMetricFamily(
            f"{PREFIX}_trials_pending_oldest_age_seconds",
            "Age of a study's oldest Pending trial; 0 when none is Pending.",
            labels=list(_STUDY_LABELS),
        )
        gap = GaugeMetricFamily(
            f"{PREFIX}_study_generalization_gap",
            "How much worse the recommended configuration's re-evaluated mean is than its "
            "search value (status.recommendation.generalizationGap; positive: optimistic).",
            labels=list(_STUDY_LABELS),
        )
        recommended_mean = GaugeMetricFamily(
            f"{PREFIX}_study_recommended_mean",
            "The recommended configuration's mean of the re-evaluation metric over its seeds.",
            labels=[*_STUDY_LABELS, "metric"],
        )
        recommended_std = GaugeMetricFamily(
            f"{PREFIX}_study_recommended_std",
            "The sample standard deviation of that metric over the recommended configuration's "
            "seeds.",
            labels=[*_STUDY_LABELS, "metric"],
        )
        reruns_planned = GaugeMetricFamily(
            f"{PREFIX}_reevaluation_runs_planned",
            "Re-evaluation runs planned (configurations x repeats), once the search ended.",
            labels=list(_STUDY_LABELS),
        )
        reruns_finished = GaugeMetricFamily(
            f"{PREFIX}_reevaluation_runs_finished",
            "Re-evaluation runs that have ended.",
            labels=list(_STUDY_LABELS),
        )
        importance = GaugeMetricFamily(
            f"{PREFIX}_study_parameter_importance",
            "Each parameter's importance to the objective (status.importances, PED-ANOVA); "
            "absent until enough trials completed.",
            labels=[*_STUDY_LABELS, "parameter"],
        )
        for (namespace, study), snapshot in snapshots.items():
            status = snapshot.status
            # The parameter as a label: the names of the study's search space, so bounded.
            for parameter, value in (status.importances or {}).items():
                importance.add_metric([namespace, study, parameter], value)
            for each in StudyPhase:
                phase.add_metric([namespace, study, each.value], float(status.phase is each))
            for state in TrialState:
                count = getattr(status.trials, state.name.lower())
                trials.add_metric([namespace, study, state.value], count)
            if status.best_trial is not None:
                best_trial = status.best_trial
                values = best_trial.values if best_trial.value is None else [best_trial.value]
                for index, value in enumerate(values or []):
                    best.add_metric([namespace, study, str(index)], value)
            for budget, (spent, most) in budget_usage(status).items():
                used.add_metric([namespace, study, budget], spent)
                if most is not None:
                    limit.add_metric([namespace, study, budget], most)
            parallelism.add_metric([namespace, study], snapshot.parallelism)
            age = 0.0
            if snapshot.oldest_pending is not None:
                age = max(0.0, (now - snapshot.oldest_pending).total_seconds())
            pending_age.add_metric([namespace, study], age)
            if status.reevaluation is not None:
                reruns_planned.add_metric([namespace, study], status.reevaluation.runs)
                reruns_finished.add_metric([namespace, study], status.reevaluation.finished)
            recommendation = status.recommendation
            if recommendation is not None:
                # The metric as a label: one per study (spec.reevaluation.metric), so bounded.
                metric = [namespace, study, recommendation.metric]
                recommended_mean.add_metric(metric, recommendation.mean)
                recommended_std.add_metric(metric, recommendation.std)
                if recommendation.generalization_gap is not None:
                    gap.add_metric([namespace, study], recommendation.generalization_gap)
        yield from (phase, trials, best, used, limit, parallelism, pending_age)
        yield from (gap, recommended_mean, recommended_std, reruns_planned, reruns_finished)
        yield importance


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OperatorMetrics:
    """The operator's metrics in their own registry (what /metrics serves).

    `clock` gives the time at scrape (a Pending trial's age); tests pass a fixed one.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], StudySnapshot] = {}
        build = Info(f"{PREFIX}_build", "The operator's version.", registry=self.registry)
        build.info(
            {
                "version": kubetune.__version__,
                "python": platform.python_version(),
                "optuna": version("optuna"),
            }
        )
        self.trials_finished = Counter(
            f"{PREFIX}_trials_finished",
            "Trials finished, by outcome (their final state).",
            [*_STUDY_LABELS, "outcome"],
            registry=self.registry,
        )
        self.trial_duration = Histogram(
            f"{PREFIX}_trial_duration_seconds",
            "Running time of finished trials (pod start to finish), by outcome.",
            [*_STUDY_LABELS, "outcome"],
            buckets=TRIAL_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.gpu_seconds = Counter(
            f"{PREFIX}_gpu_seconds",
            "GPU-seconds held by the pods of finished trials (a stopped one until it terminated).",
            list(_STUDY_LABELS),
            registry=self.registry,
        )
        self.ask_duration = Histogram(
            f"{PREFIX}_suggestion_duration_seconds",
            "Time Optuna took to suggest a trial (one ask).",
            list(_STUDY_LABELS),
            buckets=ASK_BUCKETS,
            registry=self.registry,
        )
        self.handler_duration = Histogram(
            f"{PREFIX}_handler_duration_seconds",
            "Time an operator handler took (a reconcile: read, decide, act).",
            ["handler"],
            buckets=HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.handler_errors = Counter(
            f"{PREFIX}_handler_errors",
            "Handler calls that raised (they are retried).",
            ["handler"],
            registry=self.registry,
        )
        for handler in HANDLERS:
            # Present from the start at 0, so rate() sees the first error.
            self.handler_duration.labels(handler)
            self.handler_errors.labels(handler)
        self.registry.register(_StudyCollector(self))

    # --- study state ---------------------------------------------------------------------------

    def update_study(
        self,
        namespace: str,
        study: str,
        status: TuningStudyStatus,
        *,
        parallelism: int = 1,
        oldest_pending: datetime | None = None,
    ) -> None:
        """Set a study's gauges from its status (and what the status does not hold)."""
        key = (namespace, study)
        with self._lock:
            first_time = key not in self._snapshots
            self._snapshots[key] = StudySnapshot(status, parallelism, oldest_pending)
        if first_time:
            # Every outcome present from the start at 0, so rate() sees the first increment.
            for outcome in FINISHED_STATES:
                self.trials_finished.labels(namespace, study, outcome.value)
                self.trial_duration.labels(namespace, study, outcome.value)
            self.gpu_seconds.labels(namespace, study)
            self.ask_duration.labels(namespace, study)

    def snapshots(self) -> dict[tuple[str, str], StudySnapshot]:
        with self._lock:
            return dict(self._snapshots)

    def trial_finished(
        self,
        namespace: str,
        study: str,
        outcome: TrialState,
        duration_seconds: float | None,
        gpu_seconds: float,
    ) -> None:
        """Count a trial that finished; its duration is None when its pod never ran."""
        self.trials_finished.labels(namespace, study, outcome.value).inc()
        if duration_seconds is not None:
            self.trial_duration.labels(namespace, study, outcome.value).observe(duration_seconds)
        self.gpu_seconds.labels(namespace, study).inc(gpu_seconds)

    def asked(self, namespace: str, study: str, seconds: Iterable[float]) -> None:
        """Record the duration of each ask of a reconcile."""
        histogram = self.ask_duration.labels(namespace, study)
        for duration in seconds:
            histogram.observe(duration)

    def record_plan(
        self,
        namespace: str,
        study: str,
        document: Mapping[str, Any],
        trials: Sequence[TuningTrial],
        plan: Plan,
        now: datetime,
    ) -> None:
        """Everything a reconcile's plan tells, once it has been applied: the study's gauges,
        the trials it finished, its asks. `trials` are the records the plan was made from."""
        study_status = plan.study_status
        if plan.measured_usage is not None:
            study_status = study_status.model_copy(update={"budget": plan.measured_usage})
        self.update_study(
            namespace,
            study,
            study_status,
            parallelism=parallelism_of(document),
            oldest_pending=oldest_pending(trials, plan, now),
        )
        before = {t.metadata.name: t.status for t in trials}
        for update in plan.trial_updates:
            status = update.status
            old = before.get(update.name)
            if old is not None and old.pod_terminating and not status.pod_terminating:
                # A stopped trial's pod has terminated: the GPU time it held after the stop.
                tail = max(0.0, status.gpu_seconds - old.gpu_seconds)
                self.gpu_seconds.labels(namespace, study).inc(tail)
            if old is None or not old.state.is_active or status.state.is_active:
                continue
            duration = None
            if status.start_time is not None and status.completion_time is not None:
                duration = max(0.0, (status.completion_time - status.start_time).total_seconds())
            self.trial_finished(namespace, study, status.state, duration, status.gpu_seconds)
        self.asked(namespace, study, plan.ask_seconds)

    def forget_study(self, namespace: str, study: str) -> None:
        """Remove every series of a study (it was deleted, or this replica no longer runs it)."""
        key = (namespace, study)
        with self._lock:
            self._snapshots.pop(key, None)
        labels = {"namespace": namespace, "study": study}
        for metric in (self.trials_finished, self.trial_duration, self.gpu_seconds):
            metric.remove_by_labels(labels)
        self.ask_duration.remove_by_labels(labels)

    # --- operator health -----------------------------------------------------------------------

    @contextmanager
    def handler(self, name: str) -> Iterator[None]:
        """Time a handler call; count it as an error if it raises."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.handler_errors.labels(name).inc()
            raise
        finally:
            self.handler_duration.labels(name).observe(time.perf_counter() - started)


METRICS = OperatorMetrics()
"""The operator's metrics, served on /metrics by `kubetune operator --metrics-port`."""
