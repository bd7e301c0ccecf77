"""Reconcile decisions: from a study, its trial records, its pods and the time now, the plan of
what to do (create trials and pods, stop or prune trials, record outcomes, update the status).

Deterministic and free of I/O: the operator's handlers apply the plan. The controller keeps one
thing between calls, the study's Optuna engine, and rebuilds it from the trial records whenever
they disagree (after a restart, or when an earlier plan was not applied), so the cluster's
objects stay the only source of truth.

A new trial comes with its workload (its pod, or its Job): the plan creates the TuningTrial,
then its workload, whose owner reference takes the uid the API server gave the trial
(`Plan.new_trial_workloads`, `with_owner_uid`). A trial found without one and never given one
(the operator died between the creates) gets it on the next reconcile. The creates are
idempotent by name, so a crash at any point neither duplicates nor skips a trial number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubetune.budget import (
    TrialCost,
    assess,
    usage_of,
)
from kubetune.controller import reevaluation
from kubetune.controller.endings import enforce, follow_stopped_pod, stop_trial
from kubetune.controller.metrics_source import (
    REFUSE_ALL,
    PrometheusPolicy,
    SourceReads,
    TrialRead,
    due_reads,
    prometheus_of,
)
from kubetune.controller.observation import (
    PodObservation,
    SourceReading,
)
from kubetune.controller.outcomes import record_pod_end
from kubetune.controller.plan import Event, Plan, Work
from kubetune.controller.progress import follow_trial
from kubetune.controller.reruns import reevaluate
from kubetune.controller.status import (
    build_plan,
    end_of,
    imports_recorded,
    invalid_plan,
    may_resume,
    resumed,
    search_end_of,
    search_ended,
    waiting_plan,
)
from kubetune.controller.warm_start import (
    ImportCache,
    SourceStudy,
    WarmStartVerdict,
    resolve,
)
from kubetune.engine import Engine
from kubetune.spec.immutability import immutable_changes, spec_fingerprints
from kubetune.spec.manifests import parse_study
from kubetune.spec.study import TuningStudy
from kubetune.spec.study_status import StudyPhase, TuningStudyStatus
from kubetune.spec.trial import (
    TrialState,
    TuningTrial,
    is_search_trial,
)


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
                follow_stopped_pod(work, trial, pods.get(trial.metadata.name or ""), now)
        status = previous.model_copy(update={"spec_fingerprints": fingerprints})
        if status.phase in (StudyPhase.COMPLETED, StudyPhase.FAILED):
            end = end_of(status)
            if not may_resume(study, status, end, trials, now):
                # A finished study starts nothing; it only stops what is somehow still active.
                for trial in work.all():
                    if trial.status.state.is_active:
                        stop_trial(
                            work, trial, TrialState.STOPPED, end.reason.value, end.message, now
                        )
                # What pods that outlived the end held still counts; the clock does not.
                usage = usage_of(study.spec, work.all(), status.start_time, now)
                usage = usage.model_copy(update={"elapsed_seconds": status.budget.elapsed_seconds})
                status = status.model_copy(update={"budget": usage})
                return build_plan(study, None, work, status, now, None)
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
                follow_trial(study, engine, work, trial, pods, now, self._polled)
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
            enforce(study, engine, work, decision, now)
            over = decision.end
            chosen = reevaluation.candidates(
                study.spec, work.trials.values(), engine.best_numbers()
            )
            if over is None or over.failed or not chosen:
                return build_plan(study, engine, work, status, now, decision)
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
        return reevaluate(study, engine, work, status, search_end, now)

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
                study.spec,
                _study_name(study),
                reevaluation.default_seed(study),
                trials,
                warm.imported,
            )
            self._engine_key = key
        return self._engine

    def _source_reads(self, study: TuningStudy, reads: Sequence[TrialRead]) -> SourceReads | None:
        """The reads due now, addressed to the study's Prometheus (None: none is due)."""
        source = prometheus_of(study)
        if source is None or not reads:
            return None
        namespace = study.metadata.namespace or ""
        label = self._prometheus.namespace_label
        enforced = (label, namespace) if label is not None else None
        return SourceReads(namespace, source, tuple(reads), enforced)


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
