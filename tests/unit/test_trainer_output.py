"""Whatever a trainer writes (the metrics annotation, the termination message) fails or
ignores only its own trial, with a reason naming what was wrong: it never raises in a
reconcile, and a trainer's clock cannot defeat metricsTimeout. Pods go through the real
path: a pod dict, observe_pod, StudyController.reconcile."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import pytest

from kubetune.controller import Plan, StudyController
from kubetune.controller.observation import MAX_REPORT_NESTING
from kubetune.k8s.pods import observe_pod
from kubetune.spec import api
from kubetune.spec.study_status import StudyPhase
from kubetune.spec.trial import TrialState
from tests.factories import T0, study_spec
from tests.simulation import PodScript, SimulatedCluster


def rfc3339(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def trial_pod(
    *, annotation: str | None = None, message: str | None = None, name: str = "demo-0"
) -> dict[str, Any]:
    """The trial's pod as the API returns it: running with an annotation, or succeeded (exit
    0) with a termination message."""
    running = {"running": {"startedAt": rfc3339(1)}}
    terminated = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": rfc3339(1),
            "finishedAt": rfc3339(5),
            "message": message,
        }
    }
    done = message is not None
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "annotations": {api.METRICS_ANNOTATION: annotation} if annotation else {},
        },
        "spec": {"containers": [{"name": "trainer"}]},
        "status": {
            "phase": "Succeeded" if done else "Running",
            "startTime": rfc3339(1),
            "containerStatuses": [
                {"name": "trainer", "restartCount": 0, "state": terminated if done else running}
            ],
        },
    }


def started_study(**budget: Any) -> SimulatedCluster:
    """A study whose first trial has just been created (its pod is ours to write)."""
    cluster = SimulatedCluster.of(
        study_spec(budget={"parallelism": 1, "maxTrials": 3, **budget}),
        lambda _: PodScript(end_after=None),
    )
    cluster.reconcile()
    cluster.now += timedelta(seconds=6)
    return cluster


def decide_with_pod(cluster: SimulatedCluster, pod: dict[str, Any]) -> Plan:
    plan = cluster.controller.reconcile(
        cluster.document(),
        list(cluster.trials.values()),
        {pod["metadata"]["name"]: observe_pod(pod)},
        cluster.now,
    )
    cluster.apply(plan)
    return plan


HUGE = "1" * 401

# (what the pod says, words the trial's failure message must contain)
TERMINATION_MESSAGES = [
    (f'{{"loss": {HUGE}}}', "beyond the largest float"),
    (f'{{"loss": -{HUGE}}}', "beyond the largest float"),
    ('{"loss": NaN}', "not finite"),
    ('{"loss": Infinity}', "not finite"),
    ('{"loss": "0.1"}', "not a number"),
    ('{"loss": [0.1]}', "not a number"),
    ('{"loss": {"value": 0.1}}', "not a number"),
    ('{"loss": true}', "not a number"),
    ("[" * 30_000, "nested too deeply"),
    ('{"loss": ' + "[" * 20_000 + "]" * 20_000 + "}", "nested too deeply"),
    ('{"loss": ' + "9" * 5000 + "}", "not readable"),
    ('{"loss": 0.1, "pad": "' + "x" * 3_000_000 + '"}', "characters long"),
    ("\udcff\udcfe not json", "not JSON"),
    ("[0.1]", "not a JSON object"),
]


@pytest.mark.parametrize(
    ("message", "expected"), TERMINATION_MESSAGES, ids=range(len(TERMINATION_MESSAGES))
)
def test_a_bad_termination_message_fails_its_trial_only(message: str, expected: str) -> None:
    cluster = started_study()
    decide_with_pod(cluster, trial_pod(message=message))
    trial = cluster.trials["demo-0"]
    assert trial.status.state is TrialState.FAILED
    assert trial.status.reason == "InvalidMetrics"
    assert expected in (trial.status.message or "")
    assert len(trial.status.message or "") < 2000  # a quote of it, not the document
    # The study goes on: the next trial starts.
    cluster.reconcile()
    assert "demo-1" in cluster.trials


ANNOTATIONS = [
    # A time without a timezone used to raise TypeError in every reconcile.
    (
        json.dumps({"step": 1, "metrics": {"loss": 0.5}, "time": "2026-01-01T00:00:03"}),
        "has no timezone",
    ),
    (
        json.dumps({"step": 1, "metrics": {"loss": 0.5}, "time": "0001-01-01T00:00:00+01:00"}),
        "out of range",
    ),
    (json.dumps({"step": 1, "metrics": {"loss": 0.5}, "time": 12}), "not an RFC 3339 string"),
    (json.dumps({"step": 1, "metrics": {"loss": 0.5}, "time": "yesterday"}), "not RFC 3339"),
    (json.dumps({"step": 2**64, "metrics": {"loss": 0.5}}), "non-negative"),
    (json.dumps({"step": 1.5, "metrics": {"loss": 0.5}}), "non-negative"),
    (json.dumps({"step": 1, "metrics": {"loss": 10**400}}), "beyond the largest float"),
    (json.dumps({"step": 1, "metrics": [0.5]}), '"metrics" object'),
    ('{"step": 1, "metrics": {"loss": -Infinity}}', "not finite"),
    ('{"step": 1, "metrics": ' + "{" * 10_000, "nested too deeply"),
    ('{"step": 1, "metrics": ' + '{"a": ' * 2_000 + "1" + "}" * 2_001, "nested too deeply"),
    ('{"step": 1, "metrics": {"loss": 0.5}, "x": ' + "[" * 40 + "]" * 40 + "}", "too deeply"),
]


@pytest.mark.parametrize(("annotation", "expected"), ANNOTATIONS, ids=range(len(ANNOTATIONS)))
def test_a_bad_metrics_annotation_fails_its_trial_only(annotation: str, expected: str) -> None:
    cluster = started_study()
    decide_with_pod(cluster, trial_pod(annotation=annotation))
    trial = cluster.trials["demo-0"]
    assert trial.status.state is TrialState.FAILED
    assert trial.status.reason == "InvalidMetrics"
    assert expected in (trial.status.message or "")
    cluster.reconcile()
    assert "demo-1" in cluster.trials


def nested(levels: int) -> str:
    """An annotation whose metrics object holds `levels` levels of arrays and objects in all."""
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    return '{"step": 1, "metrics": {"loss": 0.5, "notes": ' + inner + "}}"


def reading_at_stack_depth(frames: int, annotation: str) -> TrialState:
    """The trial's state after a reconcile run `frames` calls deep, as in a kopf thread."""

    def descend(remaining: int) -> TrialState:
        if remaining:
            return descend(remaining - 1)
        cluster = started_study()
        decide_with_pod(cluster, trial_pod(annotation=annotation))
        return cluster.trials["demo-0"].status.state

    return descend(frames)


@pytest.mark.parametrize("recursion_limit", [1000, 2500, 100_000])
def test_how_deep_a_report_may_nest_does_not_depend_on_the_recursion_limit(
    recursion_limit: int,
) -> None:
    # celpy raises the limit to 2500 for the whole process: a report 2000 deep was then read
    # (and kept) in one process and refused in another.
    was = sys.getrecursionlimit()
    sys.setrecursionlimit(recursion_limit)
    try:
        assert reading_at_stack_depth(0, nested(MAX_REPORT_NESTING)) is TrialState.RUNNING
        assert reading_at_stack_depth(0, nested(MAX_REPORT_NESTING + 1)) is TrialState.FAILED
        assert reading_at_stack_depth(0, nested(2_000)) is TrialState.FAILED
    finally:
        sys.setrecursionlimit(was)


def test_a_report_within_the_nesting_limit_is_read_deep_in_the_stack() -> None:
    frames = sys.getrecursionlimit() - 200  # what is left: the reconcile itself, then json
    assert reading_at_stack_depth(frames, nested(MAX_REPORT_NESTING)) is TrialState.RUNNING
    assert reading_at_stack_depth(frames, nested(MAX_REPORT_NESTING + 1)) is TrialState.FAILED


def test_brackets_inside_strings_do_not_nest() -> None:
    name = json.dumps("[{" * 100 + '\\"' + "]}" * 100)
    annotation = '{"step": 1, "metrics": {"loss": 0.5}, "note": ' + name + "}"
    assert reading_at_stack_depth(0, annotation) is TrialState.RUNNING


def test_a_report_time_in_the_future_does_not_defeat_metrics_timeout() -> None:
    cluster = started_study(metricsTimeout="60s")
    future = json.dumps(
        {"step": 1, "metrics": {"loss": 0.5}, "time": "2126-01-01T00:00:00Z", "final": False}
    )
    decide_with_pod(cluster, trial_pod(annotation=future))
    trial = cluster.trials["demo-0"]
    assert trial.status.state is TrialState.RUNNING
    assert trial.status.last_report_time == cluster.now  # the report counts as made now
    cluster.now += timedelta(seconds=61)
    decide_with_pod(cluster, trial_pod(annotation=future))  # the same report: nothing new
    trial = cluster.trials["demo-0"]
    assert trial.status.state is TrialState.FAILED
    assert "metricsTimeout" in (trial.status.message or "")


def test_a_report_time_in_the_past_counts_from_when_it_says() -> None:
    cluster = started_study(metricsTimeout="60s")
    report = json.dumps({"step": 1, "metrics": {"loss": 0.5}, "time": rfc3339(2)})
    decide_with_pod(cluster, trial_pod(annotation=report))
    assert cluster.trials["demo-0"].status.last_report_time == T0 + timedelta(seconds=2)


def test_a_spec_whose_checks_raise_is_invalid_with_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error in parse_study (a rule that cannot be evaluated) makes the study
    Invalid, naming it, instead of failing every reconcile."""
    import kubetune.controller.core as core

    def broken(_: object) -> None:
        raise ArithmeticError("decimal.DivisionImpossible\nmore detail")

    monkeypatch.setattr(core, "parse_study", broken)
    cluster = SimulatedCluster.of(study_spec(), lambda _: PodScript())
    plan = StudyController().reconcile(cluster.document(), [], {}, T0)
    assert plan.study_status.phase is StudyPhase.INVALID
    assert plan.study_status.message == (
        "the spec could not be checked (ArithmeticError: decimal.DivisionImpossible)"
    )
    assert plan.create_trials == ()
