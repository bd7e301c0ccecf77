"""An active trial's progress from what its pod shows: its pod created, its start, its
reports (or, for a study reading Prometheus, the readings), pruning, and its end with the
pod's outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubetune.budget import (
    SOURCE_ERROR_REASON,
)
from kubetune.controller.endings import finish_trial, stop_trial
from kubetune.controller.metrics_source import (
    prometheus_of,
)
from kubetune.controller.observation import (
    InvalidMetricError,
    MetricReport,
    PodObservation,
    PodPhase,
    SourceErrorKind,
    metric_value,
)
from kubetune.controller.plan import Event, Work
from kubetune.controller.trial_job import render_trial_workload
from kubetune.engine import Engine
from kubetune.spec.objective import Aggregation
from kubetune.spec.pruner import PrunerName
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import (
    IntermediateValue,
    TrialState,
    TuningTrial,
    is_search_trial,
    thin_intermediate_values,
)


def follow_trial(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    trial: TuningTrial,
    pods: Mapping[str, PodObservation],
    now: datetime,
    polled: dict[str, datetime],
) -> None:
    """An active trial's next step from what its pod shows: create the pod, start the
    trial, record its reports (or its readings), end it with its pod's outcome. `polled`:
    when each trial was last read from the metrics source (the controller's memory)."""
    name = trial.metadata.name or ""
    pod = pods.get(name)
    status = trial.status
    if pod is None:
        if status.pod_name is None:
            if trial.metadata.uid is not None:
                work.create_workloads.extend(render_trial_workload(study, trial))
        else:
            finish_trial(
                engine,
                work,
                trial,
                TrialState.FAILED,
                "PodDeleted",
                f"pod {status.pod_name} was deleted before the trial finished",
                now,
            )
        return
    if status.pod_name is None:
        status = status.model_copy(update={"pod_name": name})
        trial = work.update(trial, status)
    source = prometheus_of(study) is not None
    if pod.report_errors and pod.phase is not PodPhase.FAILED and not source:
        # A failed pod's own reason (OOMKilled, ...) says more than its garbled report.
        stop_trial(
            work,
            trial,
            TrialState.FAILED,
            "InvalidMetrics",
            "; ".join(pod.report_errors),
            now,
            engine,
        )
        return
    if pod.phase is PodPhase.PENDING:
        waiting = ": ".join(filter(None, (pod.reason, pod.message))) or None
        updates: dict[str, Any] = {}
        if waiting and waiting != status.message:
            updates["message"] = waiting
        if status.start_time is None and pod.started_at is not None:
            # Some pods of a Job run while others wait: their GPU time counts from now on.
            updates["start_time"] = pod.started_at
        if updates:
            work.update(trial, status.model_copy(update=updates))
        return
    if status.state is TrialState.PENDING:
        status = status.model_copy(
            update={
                "state": TrialState.RUNNING,
                "start_time": status.start_time or pod.started_at or now,
                "message": None,
            }
        )
        trial = work.update(trial, status)
    if source:
        take_readings(study, engine, work, trial, pod, now, polled)
        return
    try:
        trial = record_report(study, engine, work, trial, pod.latest_report, now)
        if pod.phase is PodPhase.SUCCEEDED and pod.final_report is not None:
            trial = record_report(study, engine, work, trial, pod.final_report, now)
    except InvalidMetricError as error:
        stop_trial(work, trial, TrialState.FAILED, "InvalidMetrics", str(error), now, engine)
        return
    if pod.phase is PodPhase.RUNNING:
        prune_if_hopeless(study, engine, work, trial, now)
        return
    if pod.phase is PodPhase.SUCCEEDED:
        ended = pod.finished_at or now
        complete(study, engine, work, trial, ended, "the pod succeeded without reporting")
        return
    pod_failed(engine, work, trial, pod, now)


def prune_if_hopeless(
    study: TuningStudy, engine: Engine, work: Work, trial: TuningTrial, now: datetime
) -> None:
    if should_prune(study, engine, trial):
        step = trial.status.intermediate_values[-1].step
        stop_trial(
            work,
            trial,
            TrialState.PRUNED,
            "Pruned",
            f"pruned by the {study.spec.pruner.name} pruner at step {step}",
            now,
            engine,
        )


def complete(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    trial: TuningTrial,
    ended: datetime,
    missing: str,
) -> None:
    """A trial whose pod succeeded: Succeeded with its objective values, or
    MetricsUnavailable when one is missing."""
    metrics = trial.status.metrics
    absent = [m.name for m in study.spec.objective.metrics if m.name not in metrics]
    if absent:
        finish_trial(
            engine,
            work,
            trial,
            TrialState.METRICS_UNAVAILABLE,
            "MetricsUnavailable",
            f"{missing} {', '.join(absent)}",
            ended,
        )
    else:
        values = [metrics[m.name] for m in study.spec.objective.metrics]
        finish_trial(engine, work, trial, TrialState.SUCCEEDED, "Completed", "", ended, values)


def pod_failed(
    engine: Engine, work: Work, trial: TuningTrial, pod: PodObservation, now: datetime
) -> None:
    ended = pod.finished_at or now
    detail = pod.message or (f"exit code {pod.exit_code}" if pod.exit_code is not None else "")
    if pod.reason == "DeadlineExceeded":
        finish_trial(engine, work, trial, TrialState.TIMED_OUT, "TrialTimeout", detail, ended)
    else:
        finish_trial(
            engine, work, trial, TrialState.FAILED, pod.reason or "PodFailed", detail, ended
        )


def take_readings(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    trial: TuningTrial,
    pod: PodObservation,
    now: datetime,
    polled: dict[str, datetime],
) -> None:
    """A started trial of a study whose metrics come from Prometheus: its reads are its
    reports (docs/study-spec.md, "What ends a trial"):

    - an intermediate read feeds status.metrics and the pruner; a failed one shows on the
      trial (reason MetricsSourceError), on the study's MetricsSource condition and as a
      Warning event, and the trial runs on (budget.metricsTimeout bounds how long);
    - the final read completes a trial whose pod succeeded, which stays Running until that
      read; a failed final read fails the trial (MetricsSourceError);
    - a failed pod ends the trial with the pod's reason, as without a source."""
    name = trial.metadata.name or ""
    reading = work.readings.get(name)
    if reading is not None and not reading.final:
        polled[name] = reading.at
    if reading is not None and reading.error is not None:
        kind = reading.error_kind or SourceErrorKind.UNREACHABLE
        message = f"{kind.value}: {reading.error}"
        work.source_error = (kind, message)
        if reading.final and pod.phase is PodPhase.SUCCEEDED:
            ended = pod.finished_at or now
            failure = f"the final read failed: {message}"
            finish_trial(
                engine, work, trial, TrialState.FAILED, SOURCE_ERROR_REASON, failure, ended
            )
            return
        if pod.phase is PodPhase.RUNNING and trial.status.message != message:
            status = trial.status.model_copy(
                update={"reason": SOURCE_ERROR_REASON, "message": message}
            )
            trial = work.update(trial, status)
            text = f"trial {trial.spec.number}: {message}"
            work.events.append(Event("Warning", SOURCE_ERROR_REASON, text, name))
    elif reading is not None:
        work.source_read = True
        if trial.status.reason == SOURCE_ERROR_REASON:
            status = trial.status.model_copy(update={"reason": None, "message": None})
            trial = work.update(trial, status)
        # An empty read (nothing scraped yet) is no report: metricsTimeout still counts.
        if reading.values and reading.final == (pod.phase is PodPhase.SUCCEEDED):
            step = None if reading.final else reading.step
            report = MetricReport(reading.values, step=step, time=reading.at)
            try:
                trial = record_report(study, engine, work, trial, report, now)
            except InvalidMetricError as error:
                stop_trial(
                    work, trial, TrialState.FAILED, "InvalidMetrics", str(error), now, engine
                )
                return
    if pod.phase is PodPhase.RUNNING:
        prune_if_hopeless(study, engine, work, trial, now)
    elif pod.phase is PodPhase.SUCCEEDED:
        if reading is not None and reading.final:
            ended = pod.finished_at or now
            complete(study, engine, work, trial, ended, "Prometheus gave no series for")
    else:
        pod_failed(engine, work, trial, pod, now)


def record_report(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    trial: TuningTrial,
    report: MetricReport | None,
    now: datetime,
) -> TuningTrial:
    """Fold a report into the trial's metrics; report a new step's value to Optuna."""
    if report is None:
        return trial
    status = trial.status
    objective = study.spec.objective
    last_step = status.intermediate_values[-1].step if status.intermediate_values else -1
    is_new_step = report.step is not None and report.step > last_step
    if report.step is not None and not is_new_step:
        return trial  # seen already
    if report.step is None and status.state is not TrialState.RUNNING:
        return trial
    recorded = [m.name for m in objective.metrics] + list(objective.additional_metrics)
    metrics = dict(status.metrics)
    for name in recorded:
        if name in report.metrics:
            value = metric_value(name, report.metrics[name])
            metrics[name] = aggregate(objective.aggregation, metrics.get(name), value)
    intermediate = status.intermediate_values
    reported = status.reported_steps
    first = objective.metrics[0].name
    search = is_search_trial(trial)
    if (
        is_new_step
        and report.step is not None
        and not objective.is_multi_objective
        and first in report.metrics
    ):
        value = metric_value(first, report.metrics[first])
        intermediate = thin_intermediate_values(
            [*intermediate, IntermediateValue(step=report.step, value=value)]
        )
        reported += 1
        if search:  # a re-run's values never reach the search
            engine.report(trial.spec.number, report.step, value)
    updates: dict[str, Any] = {
        "metrics": metrics,
        "intermediate_values": intermediate,
        "reported_steps": reported,
        # A trainer's clock may run ahead: a future time would defeat metricsTimeout.
        "last_report_time": min(report.time, now) if report.time else now,
    }
    if search:
        updates["system_attrs"] = engine.system_attrs(trial.spec.number)
    status = status.model_copy(update=updates)
    return work.update(trial, status)


def should_prune(study: TuningStudy, engine: Engine, trial: TuningTrial) -> bool:
    if study.spec.pruner.name is PrunerName.NONE or study.spec.objective.is_multi_objective:
        return False
    if not is_search_trial(trial):
        return False  # a re-run is a full evaluation of a configuration
    if not trial.status.intermediate_values:
        return False
    return engine.should_prune(trial.spec.number)


def aggregate(aggregation: Aggregation, old: float | None, new: float) -> float:
    """Fold one more reported value into a metric's final value."""
    if old is None or aggregation is Aggregation.LAST:
        return new
    return min(old, new) if aggregation is Aggregation.MIN else max(old, new)
