"""What a trial's end leaves behind: the GPU time and money its pod used (up to when the pod
terminated, which may be after the trainer ended), and which ended trials' pods the study's
podRetention still keeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from kubetune.budget import TrialCost, running_seconds
from kubetune.controller.observation import PodObservation
from kubetune.controller.plan import Work
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialStatus

_SUCCESSFUL_ENDINGS = frozenset({TrialState.SUCCEEDED, TrialState.PRUNED})


def past_retention(
    study: TuningStudy, trials: Sequence[TuningTrial], pod_names: frozenset[str], kept: set[str]
) -> list[str]:
    """Pods of ended trials that the study's podRetention no longer keeps: of each kind
    (succeeded or pruned; every other ending) the most recently ended stay, and the best
    trial's. Only terminated pods are removed: a stopping one is still counted."""
    retention = study.spec.pod_retention
    ended = sorted(
        (t for t in trials if not t.status.holds_pod and t.status.pod_name in pod_names),
        key=lambda t: (t.status.completion_time or datetime.min.replace(tzinfo=UTC), t.spec.number),
        reverse=True,
    )
    removed: list[str] = []
    for successful, keep in ((True, retention.succeeded), (False, retention.failed)):
        of_kind = [
            t
            for t in ended
            if (t.status.state in _SUCCESSFUL_ENDINGS) == successful
            and (t.metadata.name or "") not in kept
        ]
        removed.extend(t.status.pod_name or "" for t in of_kind[keep:])
    return removed


def pod_ended(status: TuningTrialStatus, cost: TrialCost, ended: datetime) -> TuningTrialStatus:
    """The status once the trial's pod has terminated at `ended`: its GPU time ends there."""
    if status.start_time is not None:
        ended = max(ended, status.start_time)
    status = status.model_copy(update={"pod_terminating": False, "pod_end_time": ended})
    return with_cost(status, cost, ended)


def with_cost(status: TuningTrialStatus, cost: TrialCost, now: datetime) -> TuningTrialStatus:
    """The status with the GPU time and money its pod has used as of `now`."""
    seconds = running_seconds(status, now)
    return status.model_copy(
        update={"gpu_seconds": seconds * status.gpus, "cost": seconds / 3600 * cost.money_per_hour}
    )


def record_pod_end(work: Work, trial: TuningTrial, pod: PodObservation | None) -> None:
    """A trial that ended in this reconcile with its pod: when the pod's GPU time ended (its
    last container may end after the trainer)."""
    trial = work.current(trial)
    status = trial.status
    if status.holds_pod or status.pod_end_time is not None:
        return
    ended = (pod.terminated_at if pod is not None else None) or status.completion_time
    if ended is not None:
        work.update(trial, pod_ended(status, work.cost, ended))
