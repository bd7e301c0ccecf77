"""Reconcile decisions: from a study, its trial records, its pods and the time now, the plan of
what to do (create trials and pods, stop or prune trials, record outcomes, update the status).

Deterministic and free of I/O: the operator's handlers apply the plan. The controller keeps one
thing between calls, the study's Optuna engine, and rebuilds it from the trial records whenever
they disagree (after a restart, or when an earlier plan was not applied), so the cluster's
objects stay the only source of truth.

A new trial comes with its pod: the plan creates the TuningTrial, then its pod, whose owner
reference takes the uid the API server gave the trial (`Plan.new_trial_pods`, `with_owner_uid`).
A trial found without a pod and never given one (the operator died between the two creates) gets
it on the next reconcile. Both creates are idempotent by name, so a crash at any point neither
duplicates nor skips a trial number.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from kubetune.budget import (
    SOURCE_ERROR_REASON,
    BudgetDecision,
    StudyEnd,
    TrialCost,
    assess,
    assess_reevaluation,
    usage_of,
)
from kubetune.controller import reevaluation
from kubetune.controller.best import best_and_front
from kubetune.controller.metrics_source import (
    REFUSE_ALL,
    PrometheusPolicy,
    SourceReads,
    TrialRead,
    due_reads,
    prometheus_of,
)
from kubetune.controller.observation import (
    InvalidMetricError,
    MetricReport,
    PodObservation,
    PodPhase,
    SourceErrorKind,
    SourceReading,
    metric_value,
)
from kubetune.controller.outcomes import past_retention, pod_ended, record_pod_end, with_cost
from kubetune.controller.plan import Event, Plan, TrialUpdate, Work
from kubetune.controller.status import (
    count_trials,
    end_of,
    importance_updates,
    imports_recorded,
    invalid_plan,
    may_resume,
    recommendation_text,
    resumed,
    search_end_of,
    search_ended,
    set_condition,
    source_condition,
    waiting_plan,
)
from kubetune.controller.trial_pod import render_trial_pod
from kubetune.controller.warm_start import (
    ImportCache,
    SourceStudy,
    WarmStartVerdict,
    resolve,
)
from kubetune.engine import Engine
from kubetune.spec import api
from kubetune.spec.immutability import immutable_changes, spec_fingerprints
from kubetune.spec.manifests import parse_study
from kubetune.spec.study import (
    Aggregation,
    ConditionType,
    ObjectMeta,
    PrunerName,
    StudyConditionReason,
    StudyPhase,
    TuningStudy,
    TuningStudyStatus,
)
from kubetune.spec.trial import (
    IntermediateValue,
    TrialState,
    TuningTrial,
    TuningTrialSpec,
    TuningTrialStatus,
    is_search_trial,
    thin_intermediate_values,
    trial_name,
)
from kubetune.spec.values import format_params

# A stopped pod that has not terminated this long after its grace period ran out (its node does
# not answer, say) is deleted: its slot must come free some time.
STOP_ESCALATION_SECONDS = 30.0


def default_seed(study: TuningStudy) -> int:
    """The seed of a study that sets none: stable for the study's lifetime (its uid), so a
    rebuilt study continues exactly as before even without a seed."""
    identity = study.metadata.uid or f"{study.metadata.namespace}/{study.metadata.name}"
    return int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16)


def study_seed(study: TuningStudy) -> int:
    """The seed trial seeds derive from: spec.algorithm.seed, or the default one."""
    seed = study.spec.algorithm.seed
    return default_seed(study) if seed is None else seed


def service_account_problem(study: TuningStudy, allowed: frozenset[str] | None) -> str | None:
    """Why the study's trial pods may not run as the ServiceAccount they name (None: they
    may). Creating a study creates pods, so the platform may list the accounts they use."""
    if allowed is None:
        return None
    extra = study.spec.trial_template.spec.model_extra or {}
    name = extra.get("serviceAccountName") or extra.get("serviceAccount") or "default"
    if name in allowed:
        return None
    return (
        f"spec.trialTemplate.spec.serviceAccountName: {str(name)!r} is not a ServiceAccount "
        f"trial pods may use here ({', '.join(sorted(allowed))}): use one of them, or ask the "
        "platform to add it with `kubetune operator --trial-service-account NAME` (chart value "
        "trials.allowedServiceAccounts)"
    )


class StudyController:
    """Decides for one study. Holds its Optuna engine between reconciles."""

    def __init__(
        self,
        prometheus: PrometheusPolicy = REFUSE_ALL,
        service_accounts: frozenset[str] | None = None,
    ) -> None:
        # Which Prometheus URLs studies may read (the operator's --allow-prometheus).
        self._prometheus = prometheus
        # The ServiceAccounts trial pods may run as (--trial-service-account; None: any).
        self._service_accounts = service_accounts
        self._engine: Engine | None = None
        self._engine_key: tuple[object, ...] = ()
        self._imports = ImportCache()  # what spec.warmStart.fromStudies gives, per source
        # When each running trial was last read from the metrics source: a cache like the
        # engine (after a restart every running trial is simply read at once).
        self._polled: dict[str, datetime] = {}
        # The last manifest parsed, by its JSON text: a study reconciles many times per spec
        # version, and a large spec costs far more to check than to compare.
        self._parsed: tuple[str, tuple[TuningStudy | None, dict[str, str], str]] | None = None

    def _parse(self, document: Mapping[str, Any]) -> tuple[TuningStudy | None, dict[str, str], str]:
        """_parse, once per version of the manifest. The resourceVersion (which each status
        write changes) is left out of the comparison, so the parsed study's metadata may
        hold an older one: the adapters read it from the document."""
        metadata = document.get("metadata")
        if isinstance(metadata, Mapping):
            volatile = ("resourceVersion", "managedFields")
            metadata = {k: v for k, v in metadata.items() if k not in volatile}
        manifest = {k: v for k, v in document.items() if k not in ("status", "metadata")}
        try:
            key = json.dumps({**manifest, "metadata": metadata}, sort_keys=True)
        except (TypeError, ValueError, RecursionError):  # not JSON: parse_study says why
            return _parse(document)
        if self._parsed is None or self._parsed[0] != key:
            self._parsed = (key, _parse(document))
        return self._parsed[1]

    def reconcile(
        self,
        document: Mapping[str, Any],
        trials: Sequence[TuningTrial],
        pods: Mapping[str, PodObservation],
        now: datetime,
        sources: Mapping[str, SourceStudy] | None = None,
        readings: Mapping[str, SourceReading] | None = None,
    ) -> Plan:
        """The plan for a study manifest (as read from the API), its trials and their pods
        (keyed by pod name), at time `now` (timezone-aware). `sources`: the studies named in
        spec.warmStart.fromStudies, by name (kubetune.controller.warm_start). `readings`: for
        a study whose metrics come from Prometheus, the readings of the reads the previous
        plan asked for (Plan.source_reads), by trial name; they are the trials' reports."""
        study, fingerprints, invalid = self._parse(document)
        previous = _previous_status(document)
        if study is None:
            return invalid_plan(previous, document, invalid, now)
        source = prometheus_of(study)
        refused = self._prometheus.problem(source.url) if source is not None else None
        if refused is None:
            refused = service_account_problem(study, self._service_accounts)
        if refused is not None:
            return invalid_plan(previous, document, refused, now)

        changed = immutable_changes(previous.spec_fingerprints, study.spec)
        if changed:
            return invalid_plan(
                previous, document, "; ".join(str(problem) for problem in changed), now
            )
        started = previous.start_time is not None or bool(trials)
        warm = resolve(study, started, sources or {}, self._imports)
        if warm.refused is not None:
            return invalid_plan(previous, document, warm.refused, now)
        if warm.waiting is not None:
            return waiting_plan(previous, document, warm.waiting, now)

        work = Work(
            trials={t.spec.number: t for t in trials if is_search_trial(t)},
            reruns={t.metadata.name or "": t for t in trials if not is_search_trial(t)},
            cost=TrialCost.of(study.spec),
            pod_names=frozenset(pods),
            readings=readings or {},
        )
        for trial in trials:
            if trial.status.pod_terminating:
                self._follow_stopped_pod(work, trial, pods.get(trial.metadata.name or ""), now)
        status = previous.model_copy(update={"spec_fingerprints": fingerprints})
        if status.phase in (StudyPhase.COMPLETED, StudyPhase.FAILED):
            end = end_of(status)
            if not may_resume(study, status, end, trials, now):
                # A finished study starts nothing; it only stops what is somehow still active.
                for trial in work.all():
                    if trial.status.state.is_active:
                        self._stop(
                            work, trial, TrialState.STOPPED, end.reason.value, end.message, now
                        )
                # What pods that outlived the end held still counts; the clock does not.
                usage = usage_of(study.spec, work.all(), status.start_time, now)
                usage = usage.model_copy(update={"elapsed_seconds": status.budget.elapsed_seconds})
                status = status.model_copy(update={"budget": usage})
                return self._plan(study, None, work, status, now, None)
            status = resumed(status)
            work.events.append(
                Event(
                    "Normal",
                    "StudyResumed",
                    f"the budget changed and {end.reason.value} no longer holds",
                )
            )

        engine = self._engine_for(study, fingerprints, list(work.trials.values()), warm)
        status = imports_recorded(study, engine, warm, work, status, now)
        for trial in sorted(trials, key=lambda t: t.spec.number):
            if trial.status.state.is_active:
                self._follow_trial(study, engine, work, trial, pods, now)
                record_pod_end(work, trial, pods.get(trial.metadata.name or ""))
        if prometheus_of(study) is not None:
            active = {t.metadata.name for t in work.all() if t.status.state.is_active}
            self._polled = {k: v for k, v in self._polled.items() if k in active}
            reads, work.next_read = due_reads(study, work.all(), pods, self._polled, now)
            work.source_reads = self._source_reads(study, reads)

        start = status.start_time or now
        status = status.model_copy(update={"start_time": start})
        search_end = search_end_of(status)
        if search_end is None:
            decision = assess(
                study.spec,
                work.all(),
                start,
                now,
                search_space_exhausted=engine.search_space_exhausted,
            )
            self._enforce(study, engine, work, decision, now)
            over = decision.end
            chosen = reevaluation.candidates(
                study.spec, work.trials.values(), engine.best_numbers()
            )
            if over is None or over.failed or not chosen:
                return self._plan(study, engine, work, status, now, decision)
            status = search_ended(status, over, now, study.metadata.generation)
            repeats = study.spec.reevaluation.repeats if study.spec.reevaluation else 0
            work.events.append(
                Event(
                    "Normal",
                    "ReevaluationStarted",
                    f"the search ended ({over.reason.value}: {over.message}); the best "
                    f"{len(chosen)} configurations run {repeats} more times each, with new seeds",
                )
            )
            search_end = over
        return self._reevaluate(study, engine, work, status, search_end, now)

    # --- engine ------------------------------------------------------------------------------

    def _engine_for(
        self,
        study: TuningStudy,
        fingerprints: Mapping[str, str],
        trials: Sequence[TuningTrial],
        warm: WarmStartVerdict,
    ) -> Engine:
        # The imported trials belong in the key: a source that gained a trial changes the
        # study Optuna sees. Compared by value rather than by a digest, which would serialize
        # them at each reconcile: unchanged ones are the ImportCache's objects, equal by
        # identity at once.
        key = (study.metadata.uid or "", *fingerprints.values(), warm.imported)
        if (
            self._engine is None
            or self._engine_key != key
            or not self._engine.is_in_sync_with(trials)
        ):
            self._engine = Engine.rebuild(
                study.spec, _study_name(study), default_seed(study), trials, warm.imported
            )
            self._engine_key = key
        return self._engine

    # --- what the pods show ------------------------------------------------------------------

    def _source_reads(self, study: TuningStudy, reads: Sequence[TrialRead]) -> SourceReads | None:
        """The reads due now, addressed to the study's Prometheus (None: none is due)."""
        source = prometheus_of(study)
        if source is None or not reads:
            return None
        namespace = study.metadata.namespace or ""
        label = self._prometheus.namespace_label
        enforced = (label, namespace) if label is not None else None
        return SourceReads(namespace, source, tuple(reads), enforced)

    def _follow_trial(
        self,
        study: TuningStudy,
        engine: Engine,
        work: Work,
        trial: TuningTrial,
        pods: Mapping[str, PodObservation],
        now: datetime,
    ) -> None:
        """An active trial's next step from what its pod shows: create the pod, start the
        trial, record its reports (or its readings), end it with its pod's outcome."""
        name = trial.metadata.name or ""
        pod = pods.get(name)
        status = trial.status
        if pod is None:
            if status.pod_name is None:
                if trial.metadata.uid is not None:
                    work.create_pods.append(render_trial_pod(study, trial))
            else:
                self._finish(
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
            self._stop(
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
            if waiting and waiting != status.message:
                work.update(trial, status.model_copy(update={"message": waiting}))
            return
        if status.state is TrialState.PENDING:
            status = status.model_copy(
                update={
                    "state": TrialState.RUNNING,
                    "start_time": pod.started_at or now,
                    "message": None,
                }
            )
            trial = work.update(trial, status)
        if source:
            self._take_readings(study, engine, work, trial, pod, now)
            return
        try:
            trial = self._record_report(study, engine, work, trial, pod.latest_report, now)
            if pod.phase is PodPhase.SUCCEEDED and pod.final_report is not None:
                trial = self._record_report(study, engine, work, trial, pod.final_report, now)
        except InvalidMetricError as error:
            self._stop(work, trial, TrialState.FAILED, "InvalidMetrics", str(error), now, engine)
            return
        if pod.phase is PodPhase.RUNNING:
            self._prune_if_hopeless(study, engine, work, trial, now)
            return
        if pod.phase is PodPhase.SUCCEEDED:
            ended = pod.finished_at or now
            self._complete(study, engine, work, trial, ended, "the pod succeeded without reporting")
            return
        self._pod_failed(engine, work, trial, pod, now)

    def _prune_if_hopeless(
        self, study: TuningStudy, engine: Engine, work: Work, trial: TuningTrial, now: datetime
    ) -> None:
        if self._should_prune(study, engine, trial):
            step = trial.status.intermediate_values[-1].step
            self._stop(
                work,
                trial,
                TrialState.PRUNED,
                "Pruned",
                f"pruned by the {study.spec.pruner.name} pruner at step {step}",
                now,
                engine,
            )

    def _complete(
        self,
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
            self._finish(
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
            self._finish(engine, work, trial, TrialState.SUCCEEDED, "Completed", "", ended, values)

    def _pod_failed(
        self, engine: Engine, work: Work, trial: TuningTrial, pod: PodObservation, now: datetime
    ) -> None:
        ended = pod.finished_at or now
        detail = pod.message or (f"exit code {pod.exit_code}" if pod.exit_code is not None else "")
        if pod.reason == "DeadlineExceeded":
            self._finish(engine, work, trial, TrialState.TIMED_OUT, "TrialTimeout", detail, ended)
        else:
            self._finish(
                engine, work, trial, TrialState.FAILED, pod.reason or "PodFailed", detail, ended
            )

    def _take_readings(
        self,
        study: TuningStudy,
        engine: Engine,
        work: Work,
        trial: TuningTrial,
        pod: PodObservation,
        now: datetime,
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
            self._polled[name] = reading.at
        if reading is not None and reading.error is not None:
            kind = reading.error_kind or SourceErrorKind.UNREACHABLE
            message = f"{kind.value}: {reading.error}"
            work.source_error = (kind, message)
            if reading.final and pod.phase is PodPhase.SUCCEEDED:
                ended = pod.finished_at or now
                failure = f"the final read failed: {message}"
                self._finish(
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
                    trial = self._record_report(study, engine, work, trial, report, now)
                except InvalidMetricError as error:
                    self._stop(
                        work, trial, TrialState.FAILED, "InvalidMetrics", str(error), now, engine
                    )
                    return
        if pod.phase is PodPhase.RUNNING:
            self._prune_if_hopeless(study, engine, work, trial, now)
        elif pod.phase is PodPhase.SUCCEEDED:
            if reading is not None and reading.final:
                ended = pod.finished_at or now
                self._complete(study, engine, work, trial, ended, "Prometheus gave no series for")
        else:
            self._pod_failed(engine, work, trial, pod, now)

    def _record_report(
        self,
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
                metrics[name] = _aggregate(objective.aggregation, metrics.get(name), value)
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

    @staticmethod
    def _should_prune(study: TuningStudy, engine: Engine, trial: TuningTrial) -> bool:
        if study.spec.pruner.name is PrunerName.NONE or study.spec.objective.is_multi_objective:
            return False
        if not is_search_trial(trial):
            return False  # a re-run is a full evaluation of a configuration
        if not trial.status.intermediate_values:
            return False
        return engine.should_prune(trial.spec.number)

    # --- outcomes ----------------------------------------------------------------------------

    def _finish(
        self,
        engine: Engine,
        work: Work,
        trial: TuningTrial,
        state: TrialState,
        reason: str,
        message: str,
        ended: datetime,
        values: list[float] | None = None,
    ) -> None:
        """Record how a trial ended and tell Optuna (a search trial's)."""
        updates: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "message": message or None,
            "completion_time": ended,
            "values": values,
        }
        if is_search_trial(trial):
            engine.tell(trial.spec.number, state, values)
            updates["system_attrs"] = engine.system_attrs(trial.spec.number)
        status = trial.status.model_copy(update=updates)
        work.update(trial, with_cost(status, work.cost, ended))
        event_type: Literal["Normal", "Warning"] = "Warning" if state.is_failure else "Normal"
        text = f"trial {trial.spec.number} {state.value}"
        if values is not None:
            text += " with " + ", ".join(f"{v:.6g}" for v in values)
        if message:
            text += f": {message}"
        work.events.append(Event(event_type, f"Trial{state.value}", text, trial.metadata.name))

    def _stop(
        self,
        work: Work,
        trial: TuningTrial,
        state: TrialState,
        reason: str,
        message: str,
        now: datetime,
        engine: Engine | None = None,
    ) -> None:
        """Stop an active trial and record why. A started pod is stopped where it is (its logs
        stay), a pending one is deleted; until the pod has terminated the trial holds its
        GPUs (pod_terminating)."""
        name = trial.metadata.name or ""
        work.create_pods = [p for p in work.create_pods if p["metadata"]["name"] != name]
        if engine is None:
            trial = work.update(
                trial,
                trial.status.model_copy(
                    update={
                        "state": state,
                        "reason": reason,
                        "message": message,
                        "completion_time": now,
                    }
                ),
            )
        else:
            self._finish(engine, work, trial, state, reason, message, now)
            trial = work.current(trial)
        if trial.status.pod_name is None:
            return
        if trial.status.start_time is None:
            work.delete_pods.append(trial.status.pod_name)
        else:
            work.stop_pods.append(trial.status.pod_name)
        work.update(
            trial,
            trial.status.model_copy(update={"pod_terminating": True, "pod_end_time": None}),
        )

    def _follow_stopped_pod(
        self, work: Work, trial: TuningTrial, pod: PodObservation | None, now: datetime
    ) -> None:
        """A stopped trial whose pod may still run: once it has terminated (or is gone), its
        GPU time ends; a pod that outlives its grace period by far is deleted."""
        status = trial.status
        if pod is not None and status.start_time is None and pod.started_at is not None:
            status = status.model_copy(update={"start_time": pod.started_at})  # it did start
        if pod is None or pod.terminated:
            ended = (pod.terminated_at if pod is not None else None) or now
            work.update(trial, pod_ended(status, work.cost, ended))
            return
        if status is not trial.status:
            trial = work.update(trial, status)
        give_up = (status.completion_time or now) + timedelta(
            seconds=work.cost.grace_seconds + STOP_ESCALATION_SECONDS
        )
        if now >= give_up:
            work.delete_pods.append(status.pod_name or trial.metadata.name or "")
        else:
            work.wake_at.append(give_up)

    def _enforce(
        self,
        study: TuningStudy,
        engine: Engine,
        work: Work,
        decision: BudgetDecision,
        now: datetime,
    ) -> None:
        """Apply the budget's verdict: stop what must stop, start what may start."""
        for stop in decision.trial_stops:
            trial = next(t for t in work.all() if t.metadata.name == stop.name)
            self._stop(work, trial, stop.state, stop.reason, stop.message, now, engine)
        if decision.end is not None and decision.end.stops_running_trials:
            for trial in work.all():
                if trial.status.state.is_active:
                    self._stop(
                        work,
                        trial,
                        TrialState.STOPPED,
                        decision.end.reason.value,
                        decision.end.message,
                        now,
                        engine,
                    )
        for _ in range(decision.may_start):
            if engine.search_space_exhausted:
                break
            asked = time.perf_counter()
            suggestion = engine.ask()
            work.ask_seconds.append(time.perf_counter() - asked)
            name = trial_name(study.metadata.name or "", suggestion.number)
            trial = TuningTrial(
                metadata=ObjectMeta(
                    name=name,
                    namespace=study.metadata.namespace,
                    labels={
                        api.STUDY_LABEL: study.metadata.name or "",
                        api.TRIAL_NUMBER_LABEL: str(suggestion.number),
                    },
                    owner_references=[_owner_reference(study)],
                ),
                spec=TuningTrialSpec(
                    study=study.metadata.name or "",
                    number=suggestion.number,
                    params=suggestion.params,
                    seed=reevaluation.trial_seed(study_seed(study), suggestion.number),
                ),
                status=TuningTrialStatus(gpus=work.cost.gpus, system_attrs=suggestion.system_attrs),
            )
            work.trials[suggestion.number] = trial
            work.create_trials.append(trial)
            work.new_trial_pods[name] = render_trial_pod(study, trial)
            work.events.append(
                Event(
                    "Normal",
                    "TrialStarted",
                    f"trial {suggestion.number} created with {format_params(suggestion.params)}",
                    name,
                )
            )

    # --- re-evaluation -----------------------------------------------------------------------

    def _reevaluate(
        self,
        study: TuningStudy,
        engine: Engine,
        work: Work,
        status: TuningStudyStatus,
        search_end: StudyEnd,
        now: datetime,
    ) -> Plan:
        """The search is over: re-run the best configurations with new seeds, within the
        budget, and once every re-run has ended (or none more fits) complete the study with
        the recommendation."""
        spec = study.spec
        chosen = reevaluation.candidates(spec, work.trials.values(), engine.best_numbers())
        planned = reevaluation.planned_runs(
            study.metadata.name or "", study_seed(study), spec, chosen
        )
        missing = [run for run in planned if run.name not in work.reruns]
        decision = assess_reevaluation(spec, work.all(), status.start_time, now, len(missing))
        for stop in decision.trial_stops:
            trial = work.reruns[stop.name]
            self._stop(work, trial, stop.state, stop.reason, stop.message, now, engine)
        if decision.end is not None:
            for trial in list(work.reruns.values()):
                if trial.status.state.is_active:
                    end = decision.end
                    self._stop(work, trial, TrialState.STOPPED, end.reason.value, end.message, now)
        for run in missing[: decision.may_start]:
            self._start_rerun(study, work, run)
        progress, recommendation = reevaluation.summarize(spec, chosen, work.reruns.values())
        status = status.model_copy(
            update={"reevaluation": progress, "recommendation": recommendation}
        )
        not_run = len(missing) - decision.may_start
        finished = not any(t.status.holds_pod for t in work.all()) and (
            not_run == 0 or decision.end is not None or decision.draining is not None
        )
        if not finished:
            message = (
                f"the search ended ({search_end.reason.value}); re-evaluating the best "
                f"{len(chosen)} configurations: {progress.finished} of {progress.runs} runs done"
            )
            ongoing = BudgetDecision(decision.usage, 0, (), None, None, decision.next_deadline)
            return self._plan(study, engine, work, status, now, ongoing, message)
        stopped = decision.end or decision.draining
        why = f"; the re-evaluation stopped: {stopped.message}" if stopped else ""
        outcome = recommendation_text(recommendation, progress)
        work.events.append(
            Event("Normal" if recommendation else "Warning", "Recommendation", outcome + why)
        )
        end = StudyEnd(search_end.reason, f"{search_end.message}; {outcome}{why}")
        final = BudgetDecision(decision.usage, 0, (), end, None, None)
        return self._plan(study, engine, work, status, now, final)

    def _start_rerun(self, study: TuningStudy, work: Work, run: reevaluation.PlannedRun) -> None:
        """Create a re-evaluation run: a TuningTrial of the candidate's parameters with a new
        seed, and its pod."""
        number = run.candidate.spec.number
        trial = TuningTrial(
            metadata=ObjectMeta(
                name=run.name,
                namespace=study.metadata.namespace,
                labels={
                    api.STUDY_LABEL: study.metadata.name or "",
                    api.TRIAL_NUMBER_LABEL: str(number),
                    api.REEVALUATION_LABEL: str(number),
                },
                owner_references=[_owner_reference(study)],
            ),
            spec=TuningTrialSpec(
                study=study.metadata.name or "",
                number=number,
                params=dict(run.params),
                seed=run.seed,
                reevaluation=run.run,
            ),
            status=TuningTrialStatus(gpus=work.cost.gpus),
        )
        work.add(trial)
        work.create_trials.append(trial)
        work.new_trial_pods[run.name] = render_trial_pod(study, trial)
        work.events.append(
            Event(
                "Normal",
                "ReevaluationRunStarted",
                f"run {run.run.repeat + 1} of trial {number}'s configuration, seed {run.seed}",
                run.name,
            )
        )

    # --- status ------------------------------------------------------------------------------

    def _plan(
        self,
        study: TuningStudy,
        engine: Engine | None,
        work: Work,
        status: TuningStudyStatus,
        now: datetime,
        decision: BudgetDecision | None,
        reevaluating: str | None = None,
    ) -> Plan:
        """The plan, with the study's status. `reevaluating`: the search is over and the
        re-evaluation runs (what to say about it)."""
        trials = sorted(work.trials.values(), key=lambda t: t.spec.number)
        counts = count_trials(trials)
        finished = counts.total - counts.pending - counts.running
        limit = study.spec.budget.max_trials
        previous_best = status.best_trial
        best, front, front_size = previous_best, status.pareto_front, status.pareto_front_size
        if engine is not None:
            best, front, front_size = best_and_front(study.spec, engine, work.trials)
        kept = {t.name for t in front} | ({best.name} if best is not None else set())
        ended = [*trials, *work.reruns.values()]
        work.delete_pods.extend(past_retention(study, ended, work.pod_names, kept))
        events = list(work.events)
        if (
            best is not None
            and best.value is not None
            and (previous_best is None or previous_best.number != best.number)
        ):
            events.append(
                Event(
                    "Normal",
                    "NewBest",
                    f"trial {best.number} is the new best with {best.value:.6g}",
                    best.name,
                )
            )
        if front_size != status.pareto_front_size:
            events.append(
                Event("Normal", "ParetoFront", f"{front_size} trials on the Pareto front")
            )

        updates: dict[str, Any] = {
            "trials": counts,
            "progress": f"{finished}/{limit}" if limit else str(finished),
            "best_trial": best,
            "pareto_front": front,
            "pareto_front_size": front_size,
            "observed_generation": study.metadata.generation,
            "message": "",
        }
        if decision is not None:
            updates["budget"] = decision.usage
            if engine is not None:
                updates.update(importance_updates(engine, status, counts))
            conditions = set_condition(
                status.conditions,
                ConditionType.VALID,
                "True",
                StudyConditionReason.VALID,
                "",
                now,
                study.metadata.generation,
            )
            end = decision.end
            if end is not None:
                phase = StudyPhase.FAILED if end.failed else StudyPhase.COMPLETED
                kind = ConditionType.FAILED if end.failed else ConditionType.COMPLETED
                conditions = set_condition(
                    conditions,
                    kind,
                    "True",
                    end.reason,
                    end.message,
                    now,
                    study.metadata.generation,
                )
                conditions = set_condition(
                    conditions,
                    ConditionType.RUNNING,
                    "False",
                    end.reason,
                    end.message,
                    now,
                    study.metadata.generation,
                )
                updates.update(phase=phase, completion_time=now, message=end.message)
                if end.reason in _BUDGET_REASONS:
                    events.append(Event("Normal", "BudgetExhausted", end.message))
                events.append(
                    Event(
                        "Warning" if end.failed else "Normal",
                        "StudyFailed" if end.failed else "StudySucceeded",
                        f"{end.reason.value}: {end.message}",
                    )
                )
            else:
                if reevaluating is not None:
                    phase, message = StudyPhase.REEVALUATING, reevaluating
                    reason = StudyConditionReason.REEVALUATING
                else:
                    running = counts.pending + counts.running > 0
                    phase = StudyPhase.RUNNING if running or counts.total else StudyPhase.PENDING
                    drain = decision.draining
                    message = (
                        f"{drain.message}; waiting for active trials to finish" if drain else ""
                    )
                    reason = drain.reason if drain else StudyConditionReason.TRIALS_RUNNING
                conditions = set_condition(
                    conditions,
                    ConditionType.RUNNING,
                    "True",
                    reason,
                    message,
                    now,
                    study.metadata.generation,
                )
                updates.update(phase=phase, message=message)
            updates["conditions"] = conditions
        if work.source_error is not None or work.source_read:
            updates["conditions"] = source_condition(
                updates.get("conditions", status.conditions), work, now, study.metadata.generation
            )
        new_status = status.model_copy(update=updates)
        requeue = None
        if decision is not None and decision.next_deadline is not None:
            requeue = max(0.0, (decision.next_deadline - now).total_seconds())
        for wake in [*work.wake_at, *([work.next_read] if work.next_read else [])]:
            until = max(0.0, (wake - now).total_seconds())
            requeue = until if requeue is None else min(requeue, until)
        if work.source_reads is not None:
            requeue = 0.0  # their readings are the next reconcile's input
        return Plan(
            study_status=new_status,
            trial_updates=tuple(TrialUpdate(name, s) for name, s in work.updates.items()),
            stop_pods=tuple(p for p in dict.fromkeys(work.stop_pods) if p not in work.delete_pods),
            delete_pods=tuple(dict.fromkeys(work.delete_pods)),
            create_trials=tuple(work.create_trials),
            new_trial_pods=work.new_trial_pods,
            create_pods=tuple(work.create_pods),
            events=tuple(events),
            requeue_after=requeue,
            source_reads=work.source_reads,
            ask_seconds=tuple(work.ask_seconds),
        )


_BUDGET_REASONS = frozenset(
    {
        StudyConditionReason.MAX_TRIALS_REACHED,
        StudyConditionReason.MAX_DURATION_REACHED,
        StudyConditionReason.GPU_HOURS_EXHAUSTED,
        StudyConditionReason.MONEY_EXHAUSTED,
    }
)
"""Endings that mean a budget of spec.budget ran out (a BudgetExhausted event says which)."""


def _parse(document: Mapping[str, Any]) -> tuple[TuningStudy | None, dict[str, str], str]:
    """The study's spec parsed and its fingerprints, or None and why it is invalid. The status
    is ours and is read on its own: a field an older operator wrote there must not make the
    spec Invalid. A rule that fails unexpectedly (or a spec too deep to fingerprint) makes the
    study Invalid with the error, rather than failing every reconcile."""
    try:
        study, problems = parse_study({k: v for k, v in document.items() if k != "status"})
        fingerprints = spec_fingerprints(study.spec) if study is not None else {}
    except Exception as error:  # any input must end in a verdict, never in a retry loop
        first_line = (str(error).splitlines() or [""])[0][:500]
        return None, {}, f"the spec could not be checked ({type(error).__name__}: {first_line})"
    if study is None or problems:
        return None, {}, "; ".join(str(problem) for problem in problems)
    return study, dict(fingerprints), ""


def _previous_status(document: Mapping[str, Any]) -> TuningStudyStatus:
    """The status the study had; one that cannot be read is started afresh (it is ours to
    write, and everything in it can be derived again from the trials)."""
    try:
        return TuningStudyStatus.model_validate(document.get("status") or {})
    except ValueError:
        return TuningStudyStatus()


def _study_name(study: TuningStudy) -> str:
    return f"{study.metadata.namespace}/{study.metadata.name}"


def _owner_reference(study: TuningStudy) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.STUDY_KIND,
        "name": study.metadata.name,
        "uid": study.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _aggregate(aggregation: Aggregation, old: float | None, new: float) -> float:
    """Fold one more reported value into a metric's final value."""
    if old is None or aggregation is Aggregation.LAST:
        return new
    return min(old, new) if aggregation is Aggregation.MIN else max(old, new)
