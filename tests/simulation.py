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
    MetricReport,
    Plan,
    PodObservation,
    PodPhase,
    StudyController,
    with_owner_uid,
)
from kubetune.spec.study import StudyPhase, TuningStudy, TuningStudySpec, TuningStudyStatus
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


Script = Callable[[TuningTrial], PodScript]


@dataclass
class _Pod:
    created: datetime
    script: PodScript
    deadline: float | None = None
    """activeDeadlineSeconds: the kubelet kills the pod this long after it started."""


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

    def observe(self, name: str) -> PodObservation | None:
        pod = self.pods.get(name)
        if pod is None:
            return None
        elapsed = (self.now - pod.created).total_seconds()
        script = pod.script
        started = pod.created + timedelta(seconds=script.start_after)
        if elapsed < script.start_after:
            return PodObservation(PodPhase.PENDING, reason="ContainerCreating")
        reports = [r for r in script.reports if r[0] <= elapsed]
        latest = None
        if reports:
            at, step, value = reports[-1]
            latest = MetricReport(
                {self.metric: value}, step=step, time=pod.created + timedelta(seconds=at)
            )
        deadline = None if pod.deadline is None else script.start_after + pod.deadline
        ends = [t for t in (script.end_after, deadline) if t is not None]
        if not ends or elapsed < min(ends):
            return PodObservation(PodPhase.RUNNING, started_at=started, latest_report=latest)
        if deadline is not None and deadline <= min(ends):
            return PodObservation(
                PodPhase.FAILED,
                started_at=started,
                finished_at=pod.created + timedelta(seconds=deadline),
                latest_report=latest,
                reason="DeadlineExceeded",
            )
        assert script.end_after is not None
        finished = pod.created + timedelta(seconds=script.end_after)
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
        )

    def decide(self, controller: StudyController | None = None) -> Plan:
        """The plan for the cluster as it is now, not applied."""
        observations = {
            name: observation
            for name in self.pods
            if (observation := self.observe(name)) is not None
        }
        return (controller or self.controller).reconcile(
            self.document(), list(self.trials.values()), observations, self.now
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
        for pod in plan.delete_pods:
            self.pods.pop(pod, None)
        for trial in plan.create_trials:
            name = trial.metadata.name or ""
            assert name not in self.trials, f"trial {name} created twice"
            self._uid += 1
            metadata = trial.metadata.model_copy(
                update={"uid": f"trial-uid-{self._uid}", "creation_timestamp": self.now}
            )
            self.trials[name] = trial.model_copy(update={"metadata": metadata})
        new_pods = [
            with_owner_uid(plan.new_trial_pods[name], self.trials[name].metadata.uid or "")
            for name in (trial.metadata.name or "" for trial in plan.create_trials)
            if name in plan.new_trial_pods
        ]
        for pod in [*new_pods, *plan.create_pods]:
            name = pod["metadata"]["name"]
            if name not in self.pods:
                deadline = pod["spec"].get("activeDeadlineSeconds")
                self.pods[name] = _Pod(self.now, self.script(self.trials[name]), deadline)
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
