"""A cluster in memory for controller tests: it applies plans to TuningTrial records and pods,
and the pods follow scripts (when they start, what they report, how they end).

It plays the part the Kubernetes adapters and the kubelet play in production, with no I/O, so
that the controller's decisions can be checked step by step and with hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubetune.controller import (
    STOP_DEADLINE_SECONDS,
    MetricReport,
    Plan,
    PodObservation,
    PodPhase,
    StudyController,
    with_owner_uid,
)
from kubetune.controller.warm_start import SourceStudy
from kubetune.spec.study import TuningStudy, TuningStudySpec
from kubetune.spec.study_status import StudyPhase, TuningStudyStatus
from kubetune.spec.trial import TuningTrial
from tests.factories import T0


@dataclass(frozen=True)
class PodScript:
    """How a trial's pod behaves, in seconds after it was created."""

    start_after: float = 1.0
    reports: tuple[tuple[float, int, float], ...] = ()
    """(time, step, objective value) while running."""
    end_after: float | None = 10.0
    """When the container exits; None: it runs until it is deleted."""
    succeeds: bool = True
    final: Mapping[str, object] | None = None
    """The termination message's metrics; None: nothing written."""
    reason: str | None = None
    """Why it failed (succeeds=False), e.g. OOMKilled or DeadlineExceeded."""
    exits_after_sigterm: float = 0.0
    """How long the trainer takes to exit once told to stop; past the pod's grace period it is
    killed at the grace period (a trainer that ignores SIGTERM: float("inf"))."""


Script = Callable[[TuningTrial], PodScript]


@dataclass
class _Pod:
    created: datetime
    script: PodScript
    deadline: float | None = None
    """activeDeadlineSeconds: the kubelet kills the pod this long after it started."""
    grace: float = 30.0
    """terminationGracePeriodSeconds."""
    gpus: int = 0
    deleted_at: float | None = None
    """When the pod was deleted, in seconds after it was created."""
    lowered_deadline_at: float | None = None
    """When its lowered activeDeadlineSeconds fires, in seconds after it was created: a deadline
    already past when it was lowered fires then, not earlier."""

    def _stop_requested(self) -> float | None:
        """When the kubelet tells the trainer to stop: at its deadline, or at its deletion."""
        start = self.script.start_after
        times = [start + self.deadline] if self.deadline is not None else []
        if self.lowered_deadline_at is not None:
            times.append(self.lowered_deadline_at)
        if self.deleted_at is not None:
            times.append(max(self.deleted_at, start))
        return min(times, default=None)

    def end(self) -> tuple[float | None, bool]:
        """When the pod's last process ends (None: not yet known), and whether it was killed."""
        natural = self.script.end_after
        requested = self._stop_requested()
        if requested is None or (natural is not None and natural <= requested):
            return natural, False
        return requested + min(self.script.exits_after_sigterm, self.grace), True

    def held_seconds(self, elapsed: float) -> float:
        """How long its processes have run, as of `elapsed` seconds after it was created."""
        start = self.script.start_after
        if self.deleted_at is not None and self.deleted_at < start:
            return 0.0
        end, _ = self.end()
        until = elapsed if end is None else min(end, elapsed)
        return max(0.0, until - start)


@dataclass
class SimulatedCluster:
    study: TuningStudy
    script: Script
    metric: str = "loss"
    controller: StudyController = field(default_factory=StudyController)
    trials: dict[str, TuningTrial] = field(default_factory=dict)
    pods: dict[str, _Pod] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    gone: list[_Pod] = field(default_factory=list)
    """Pods deleted whose processes ended: what they held still counts."""
    sources: dict[str, SourceStudy] = field(default_factory=dict)
    """The studies of spec.warmStart.fromStudies that exist, by name."""
    now: datetime = T0
    _uid: int = 0

    @classmethod
    def of(cls, spec: TuningStudySpec, script: Script, name: str = "demo") -> SimulatedCluster:
        from tests.factories import study

        return cls(study=study(spec, name), script=script)

    def document(self) -> dict[str, Any]:
        body = self.study.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["status"] = self.status
        return body

    def gpu_seconds_held(self) -> float:
        """What every pod really held: its GPUs times the time its processes ran."""
        return sum(
            pod.gpus * pod.held_seconds((self.now - pod.created).total_seconds())
            for pod in [*self.pods.values(), *self.gone]
        )

    def observe(self, name: str) -> PodObservation | None:
        pod = self.pods.get(name)
        if pod is None:
            return None
        elapsed = (self.now - pod.created).total_seconds()
        script = pod.script
        started = pod.created + timedelta(seconds=script.start_after)
        end, killed = pod.end()
        if pod.deleted_at is not None and (
            pod.deleted_at < script.start_after or (end is not None and elapsed >= end)
        ):
            self.gone.append(self.pods.pop(name))  # graceful deletion is over
            return None
        if elapsed < script.start_after:
            return PodObservation(PodPhase.PENDING, reason="ContainerCreating")
        reports = [r for r in script.reports if r[0] <= elapsed]
        latest = None
        if reports:
            at, step, value = reports[-1]
            latest = MetricReport(
                {self.metric: value}, step=step, time=pod.created + timedelta(seconds=at)
            )
        if end is None or elapsed < end:
            return PodObservation(PodPhase.RUNNING, started_at=started, latest_report=latest)
        finished = pod.created + timedelta(seconds=end)
        if killed:
            return PodObservation(
                PodPhase.FAILED,
                started_at=started,
                finished_at=finished,
                latest_report=latest,
                reason="DeadlineExceeded",
                terminated=True,
                terminated_at=finished,
            )
        final = MetricReport(script.final) if script.final is not None else None
        phase = PodPhase.SUCCEEDED if script.succeeds else PodPhase.FAILED
        return PodObservation(
            phase,
            started_at=started,
            finished_at=finished,
            latest_report=latest,
            final_report=final,
            reason=script.reason,
            exit_code=0 if script.succeeds else 1,
            terminated=True,
            terminated_at=finished,
        )

    def decide(self, controller: StudyController | None = None) -> Plan:
        """The plan for the cluster as it is now, not applied."""
        observations = {
            name: observation
            for name in list(self.pods)
            if (observation := self.observe(name)) is not None
        }
        return (controller or self.controller).reconcile(
            self.document(), list(self.trials.values()), observations, self.now, self.sources
        )

    def reconcile(self) -> Plan:
        plan = self.decide()
        self.apply(plan)
        self.plans.append(plan)
        return plan

    def apply(self, plan: Plan) -> None:
        for update in plan.trial_updates:
            old = self.trials[update.name]
            self.trials[update.name] = old.model_copy(update={"status": update.status})
        for name in plan.stop_workloads:
            stopped = self.pods.get(name)
            # Lowering activeDeadlineSeconds (never raising it), as the API server allows.
            if stopped is not None and stopped.lowered_deadline_at is None:
                elapsed = (self.now - stopped.created).total_seconds()
                lowered = stopped.script.start_after + STOP_DEADLINE_SECONDS
                stopped.lowered_deadline_at = max(lowered, elapsed)
        for name in plan.delete_workloads:
            if (deleted := self.pods.get(name)) is not None and deleted.deleted_at is None:
                deleted.deleted_at = (self.now - deleted.created).total_seconds()
        for trial in plan.create_trials:
            name = trial.metadata.name or ""
            assert name not in self.trials, f"trial {name} created twice"
            self._uid += 1
            metadata = trial.metadata.model_copy(
                update={"uid": f"trial-uid-{self._uid}", "creation_timestamp": self.now}
            )
            self.trials[name] = trial.model_copy(update={"metadata": metadata})
        new_pods = [
            with_owner_uid(pod, self.trials[name].metadata.uid or "")
            for name in (trial.metadata.name or "" for trial in plan.create_trials)
            for pod in plan.new_trial_workloads.get(name, ())
        ]
        for pod in [*new_pods, *plan.create_workloads]:
            name = pod["metadata"]["name"]
            if name not in self.pods:
                spec = pod["spec"]
                gpus = sum(
                    int(amount)
                    for container in spec["containers"]
                    for resource, amount in (container.get("resources") or {})
                    .get("limits", {})
                    .items()
                    if resource.endswith("/gpu")
                )
                self.pods[name] = _Pod(
                    self.now,
                    self.script(self.trials[name]),
                    spec.get("activeDeadlineSeconds"),
                    grace=float(spec.get("terminationGracePeriodSeconds", 30)),
                    gpus=gpus,
                )
        self.status = plan.study_status.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def study_status(self) -> TuningStudyStatus:
        return TuningStudyStatus.model_validate(self.status)

    def run(self, tick: float = 1.0, limit: int = 10_000) -> TuningStudyStatus:
        """Reconcile every `tick` seconds until the study finishes."""
        for _ in range(limit):
            self.reconcile()
            if self.study_status.phase in (StudyPhase.COMPLETED, StudyPhase.FAILED):
                return self.study_status
            self.now += timedelta(seconds=tick)
        raise AssertionError(f"study did not finish in {limit} reconciles: {self.status}")
