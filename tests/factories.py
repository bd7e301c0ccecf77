"""Builders of study specs and trial records for tests: small, explicit defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubetune.spec.study import ObjectMeta, TuningStudy, TuningStudySpec
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialSpec, TuningTrialStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """A time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def study_spec(
    *,
    budget: dict[str, Any] | None = None,
    objective: dict[str, Any] | None = None,
    algorithm: dict[str, Any] | None = None,
    pruner: dict[str, Any] | None = None,
    search_space: list[dict[str, Any]] | None = None,
    gpus: int = 0,
    warm_start: dict[str, Any] | None = None,
    grace: int | None = None,
    reevaluation: dict[str, Any] | None = None,
) -> TuningStudySpec:
    container: dict[str, Any] = {"name": "trainer", "image": "trainer:1", "command": ["train"]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    document: dict[str, Any] = {
        "objective": objective or {"metrics": [{"name": "loss", "direction": "minimize"}]},
        "searchSpace": search_space
        or [
            {"name": "x", "type": "float", "low": -10.0, "high": 10.0},
            {"name": "y", "type": "int", "low": 0, "high": 5},
        ],
        "algorithm": algorithm or {"name": "random", "seed": 1},
        "budget": budget or {},
        "trialTemplate": {"spec": {"containers": [container]}},
    }
    if grace is not None:
        document["trialTemplate"]["spec"]["terminationGracePeriodSeconds"] = grace
    if pruner:
        document["pruner"] = pruner
    if warm_start:
        document["warmStart"] = warm_start
    if reevaluation is not None:
        document["reevaluation"] = reevaluation
    return TuningStudySpec.model_validate(document)


def study(spec: TuningStudySpec, name: str = "demo", namespace: str = "default") -> TuningStudy:
    return TuningStudy(
        metadata=ObjectMeta(name=name, namespace=namespace, uid=f"uid-{name}", generation=1),
        spec=spec,
    )


def trial(
    number: int,
    state: TrialState = TrialState.RUNNING,
    *,
    started: float | None = 0.0,
    ended: float | None = None,
    created: float = 0.0,
    values: list[float] | None = None,
    gpus: int = 0,
    last_report: float | None = None,
    params: dict[str, Any] | None = None,
    study_name: str = "demo",
    terminating: bool = False,
    pod_ended: float | None = None,
) -> TuningTrial:
    """A trial record; times are seconds after T0."""
    return TuningTrial(
        metadata=ObjectMeta(
            name=f"{study_name}-{number}",
            namespace="default",
            uid=f"uid-{study_name}-{number}",
            creation_timestamp=at(created),
        ),
        spec=TuningTrialSpec(study=study_name, number=number, params=params or {"x": 0.0, "y": 1}),
        status=TuningTrialStatus(
            state=state,
            start_time=None if started is None else at(started),
            completion_time=None if ended is None else at(ended),
            values=values,
            gpus=gpus,
            last_report_time=None if last_report is None else at(last_report),
            pod_name=f"{study_name}-{number}",
            pod_terminating=terminating,
            pod_end_time=None if pod_ended is None else at(pod_ended),
        ),
    )
