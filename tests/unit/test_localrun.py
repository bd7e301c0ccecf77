"""Local runs: the controller's plans carried out with real processes, no cluster."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.localrun import LocalRun
from kubetune.spec.study import StudyPhase
from kubetune.spec.trial import TrialState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def study(script: str, budget: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A study whose trainer is the given Python script."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": "local"},
        "spec": {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [{"name": "x", "type": "float", "low": -3, "high": 3}],
            "algorithm": {"name": "random", "seed": 7},
            "budget": budget,
            "trialTemplate": {
                "spec": {
                    "containers": [
                        {"name": "t", "command": ["python3", "-c", script, "${params.x}"]}
                    ]
                }
            },
            **spec,
        },
    }


WRITE_LOSS = """
import json, os, sys
x = float(sys.argv[1])
assert float(os.environ["KUBETUNE_PARAM_X"]) == x
assert json.loads(os.environ["KUBETUNE_PARAMS"]) == {"x": x}
with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
    json.dump({"loss": (x - 1) ** 2}, log)
"""


def test_trials_receive_their_params_and_report_through_the_termination_message(
    tmp_path: Path,
) -> None:
    run = LocalRun(study(WRITE_LOSS, {"maxTrials": 5, "parallelism": 2}), tmp_path, echo=print)
    status = run.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.trials.succeeded == 5
    for trial in run.trials.values():
        x = float(trial.spec.params["x"])  # type: ignore[arg-type]
        assert trial.status.values == [pytest.approx((x - 1) ** 2)]
    assert status.best_trial is not None
    best_x = float(status.best_trial.params["x"])  # type: ignore[arg-type]
    assert all(abs(best_x - 1) <= abs(float(t.spec.params["x"]) - 1) for t in run.trials.values())  # type: ignore[arg-type]


def test_failures_timeouts_and_garbage_each_fail_their_trial(tmp_path: Path) -> None:
    script = """
import json, os, sys, time
x = float(sys.argv[1])
if x < -1:
    sys.exit(3)
if x < 1:
    with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
        log.write("not json")
else:
    with open("pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
"""
    document = study(
        script,
        {"maxTrials": 3, "parallelism": 3, "trialTimeout": "2s"},
        warmStart={"configurations": [{"x": -2.0}, {"x": 0.0}, {"x": 2.0}]},
    )
    run = LocalRun(document, tmp_path, echo=print)
    status = run.run()
    # No trial succeeded: the study failed, and says what the first failure was.
    assert status.phase is StudyPhase.FAILED
    assert "NoTrialSucceeded" in {c.reason for c in status.conditions}
    assert "trial 0 Failed (Error): exit code 3" in status.message
    for trial in run.trials.values():
        x = float(trial.spec.params["x"])  # type: ignore[arg-type]
        state, reason = trial.status.state, trial.status.reason
        if x < -1:
            assert (state, reason) == (TrialState.FAILED, "Error")
            assert trial.status.message == "exit code 3"
        elif x < 1:
            assert (state, reason) == (TrialState.FAILED, "InvalidMetrics")
            assert "not JSON" in (trial.status.message or "")
        else:
            assert state is TrialState.TIMED_OUT
            pid = int((tmp_path / (trial.metadata.name or "") / "pid").read_text())
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # no process outlives its deadline
    assert sorted(t.status.state for t in run.trials.values()) == sorted(
        [TrialState.FAILED, TrialState.FAILED, TrialState.TIMED_OUT]
    )


@pytest.mark.parametrize(
    "name", ["synthetic-quadratic.yaml", "multi-objective.yaml", "grid.yaml", "warm-start.yaml"]
)
def test_example_runs_to_completion_locally(name: str, tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    document["spec"]["budget"]["maxTrials"] = 6
    run = LocalRun(document, tmp_path, echo=print)
    status = run.run()
    assert status.phase is StudyPhase.COMPLETED, status.message
    assert status.trials.succeeded == status.trials.total
    assert status.best_trial is not None
    values = status.best_trial.values or [status.best_trial.value]
    assert all(v is not None and math.isfinite(v) for v in values)
    final = json.loads((tmp_path / status.best_trial.name / "termination-log").read_text())
    assert all(value in final.values() for value in values)
