"""Reading a trial that is a batch/v1 Job for the controller: one PodObservation of the whole
trial, from the Job's conditions and its pods (docs/study-spec.md, "Trials as Jobs").

- The outcome is the Job's: Complete is Succeeded; Failed (or FailureTarget, its first sign) is
  Failed with the reason of the pod that failed (OOMKilled, Error, DeadlineExceeded: a pod over
  trialTimeout, so the trial TimedOut), else the Job's own (DeadlineExceeded, PodFailurePolicy,
  BackoffLimitExceeded). Until the Job says, a pod that ended does not end the trial.
- Running once each of the pods that run at once (its parallelism) has started; Pending until
  then, with why the first waiting pod waits. The trial's start (its GPU time) is the first
  pod's start even while others wait.
- Metrics and the main container's state come from the primary pod: the pod of completion
  index 0 (the newest, after a retry), its primary container.
- Terminated once the Job has finished (or is gone: a stopped trial's Job is deleted with its
  pods orphaned) and none of its pods runs; terminated_at is when the last of them ended.

Pure, like kubetune.k8s.pods: the Job and its pods as the API returns them (dicts, or kopf's
read-only bodies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from kubetune.controller.observation import PodObservation, PodPhase
from kubetune.k8s.cache import without_managed_fields
from kubetune.k8s.fields import as_mapping, as_sequence, as_text, as_time
from kubetune.k8s.pods import observe_pod
from kubetune.spec import api

JOB_FAILURE_CONDITIONS: Final = ("Failed", "FailureTarget")
"""Conditions that say a Job has failed (FailureTarget comes first, while its pods end)."""


def job_essentials(job: Mapping[str, Any]) -> dict[str, Any]:
    """What `observe_job` reads of a Job: its metadata (without managedFields), its parallelism
    and completions, and its status. The pod template is left out (most of its size)."""
    metadata = without_managed_fields(job)["metadata"]
    spec = as_mapping(job.get("spec"))
    return {
        "metadata": metadata,
        "spec": {k: spec[k] for k in ("parallelism", "completions") if k in spec},
        "status": job.get("status") or {},
    }


def observe_job(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    container: str | None = None,
) -> PodObservation:
    """The trial's observation from its Job (None once deleted) and the pods it made; see
    the module's docstring. `container` names the primary container (None: the first).
    Raises ValueError when a pod cannot be read (kubetune.k8s.pods.observe_pod)."""
    observed = [(pod, observe_pod(pod, container)) for pod in pods]
    primary = _primary(observed)
    ends = [o.terminated_at for _, o in observed if o.terminated_at is not None]
    starts = [o.started_at for _, o in observed if o.started_at is not None]
    running = any(not o.terminated for _, o in observed)
    finished = job is None or _job_finished(job)
    terminated = finished and not running
    base = replace(
        primary or PodObservation(phase=PodPhase.PENDING),
        started_at=min(starts, default=None),
        terminated=terminated,
        terminated_at=max(ends, default=None) if terminated else None,
    )
    condition = _condition(job, "Complete")
    if condition is not None:
        return replace(
            base,
            phase=PodPhase.SUCCEEDED,
            finished_at=base.finished_at
            or as_time(as_mapping(condition).get("lastTransitionTime")),
        )
    failure = next(
        (c for kind in JOB_FAILURE_CONDITIONS if (c := _condition(job, kind)) is not None), None
    )
    if failure is not None or job is None:
        return _failed(job, failure, observed, base)
    wanted = _pods_at_once(job)
    started = [o for _, o in observed if o.phase is not PodPhase.PENDING]
    if len(started) >= wanted:
        return replace(base, phase=PodPhase.RUNNING, reason=None, message=None)
    waiting = next(((p, o) for p, o in observed if o.phase is PodPhase.PENDING), None)
    reason = waiting[1].reason if waiting else None
    detail = waiting[1].message if waiting else None
    message = f"{len(started)} of {wanted} pods started"
    if waiting is not None:
        message += f"; pod {_name(waiting[0])} waits" + (f": {detail}" if detail else "")
    return replace(
        base,
        phase=PodPhase.PENDING,
        reason=reason,
        message=message,
        final_report=None,
    )


def _failed(
    job: Mapping[str, Any] | None,
    failure: Mapping[str, Any] | None,
    observed: Sequence[tuple[Mapping[str, Any], PodObservation]],
    base: PodObservation,
) -> PodObservation:
    """A Job that failed (or is gone): the reason of the pod that failed first, else its own.
    Pods the job controller deleted once the Job had failed (SIGTERM, exit code 143) come
    after those that failed on their own: Kubernetes' times have one-second resolution, so
    their end often ties with the failure that caused it."""
    failed = [(p, o) for p, o in observed if o.phase is PodPhase.FAILED]
    never = datetime.max.replace(tzinfo=UTC)  # a pod evicted before any container ended
    failed.sort(
        key=lambda item: (
            "deletionTimestamp" in as_mapping(item[0].get("metadata")),
            item[1].finished_at or item[1].terminated_at or never,
        )
    )
    finished_at = as_time(as_mapping(failure).get("lastTransitionTime"))
    job_reason = as_text(as_mapping(failure).get("reason"))
    if failed and job_reason not in ("DeadlineExceeded", "PodFailurePolicy"):
        pod, observation = failed[0]
        index = _completion_index(pod)
        prefix = f"pod {_name(pod)}" + (f" (index {index})" if index is not None else "")
        detail = observation.message or (
            f"exit code {observation.exit_code}" if observation.exit_code is not None else ""
        )
        return replace(
            base,
            phase=PodPhase.FAILED,
            reason=observation.reason or "PodFailed",
            message=f"{prefix}: {detail}" if detail else prefix,
            exit_code=observation.exit_code,
            finished_at=observation.finished_at or finished_at,
            final_report=None,
        )
    return replace(
        base,
        phase=PodPhase.FAILED,
        reason=job_reason or ("JobDeleted" if job is None else "JobFailed"),
        message=as_text(as_mapping(failure).get("message"))
        or ("the trial's Job was deleted" if job is None else None),
        finished_at=finished_at or base.finished_at,
        final_report=None,
    )


def _primary(
    observed: Sequence[tuple[Mapping[str, Any], PodObservation]],
) -> PodObservation | None:
    """The pod of completion index 0, the newest one after a retry (else any pod)."""
    candidates = [(p, o) for p, o in observed if _completion_index(p) in (None, "0")]
    if not candidates:
        return None
    candidates.sort(key=lambda item: _created(item[0]))
    return candidates[-1][1]


def _created(pod: Mapping[str, Any]) -> str:
    return str(as_mapping(pod.get("metadata")).get("creationTimestamp", ""))


def _job_finished(job: Mapping[str, Any]) -> bool:
    return any(_condition(job, kind) is not None for kind in ("Complete", *JOB_FAILURE_CONDITIONS))


def _condition(job: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    if job is None:
        return None
    for condition in as_sequence(as_mapping(job.get("status")).get("conditions")):
        condition = as_mapping(condition)
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _pods_at_once(job: Mapping[str, Any]) -> int:
    spec = as_mapping(job.get("spec"))
    parallelism, completions = spec.get("parallelism"), spec.get("completions")
    counts = [n for n in (parallelism, completions) if isinstance(n, int) and n > 0]
    return min(counts, default=1)


def _completion_index(pod: Mapping[str, Any]) -> str | None:
    annotations = as_mapping(as_mapping(pod.get("metadata")).get("annotations"))
    index = annotations.get(api.JOB_COMPLETION_INDEX_ANNOTATION)
    return index if isinstance(index, str) else None


def _name(pod: Mapping[str, Any]) -> str:
    return str(as_mapping(pod.get("metadata")).get("name", ""))
